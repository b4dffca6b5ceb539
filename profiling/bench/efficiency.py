"""`cvserve bench efficiency`: the served ensemble against what its stages do alone.

Same images, same batch size: preprocessing alone (the DALI backend the served model uses, in
this process), the DNN alone (the same network, engine and threads), and the served ensemble
over gRPC, each with the CPU-seconds it spent per image (this process's CPU time: every thread
of DALI, torch, onnxruntime, and of the client). The **limit** is the slower stage on a GPU. On a
CPU-only machine it is what the cores can do when all they do is the work itself: ``cores /
(CPU-s per image of preprocessing alone + of the DNN alone + of the client per request)`` — the
client shares the machine. The serial composition ``1 / (1/a + 1/b)`` (right only when each
stage uses every core) is kept beside it as ``serial_limit``.

Measured in rounds (`profiling.bench.rounds`): the server starts once; each round measures the
stages alone and the served pipeline (and the baseline's, when given) back to back, served first
in the first round and the order reversed each round after; served / limit (and the speedup over
the baseline) is taken per round. Each size reports the median of the rounds with their min–max
(every round kept in the JSON), and against the target (served / limit ≥ 0.9) whether the run
decides it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from cvserve.deploy.host import usable_cores
from cvserve.models.engine_choice import load_chosen, stage_device, synchronized
from cvserve.models.params import DnnParams
from cvserve.models.serving import serve_locally
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import is_fused, unfused
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.spec import PreprocessParams
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling import process_cpu
from cvserve.profiling.bench.rounds import (
    ORDER_RULE,
    Spread,
    Verdict,
    alternating_rounds,
    medians,
    round_order,
)
from cvserve.profiling.load import closed_loop, image_senders, warm_up
from cvserve.profiling.machine import machine_info, write_report

EFFICIENCY_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080))
# The command's defaults (`cvserve bench efficiency`), from an estimate for classify resnet50 on
# 2 cores: ~45 s to load and start, then per round 5 measurements (2 sizes alone, the DNN, 2
# sizes served) of 3 s plus ~3 s of warm-up calls and drained requests: ~2.3 minutes in all. The
# median of 5 rounds stays put with 2 of them noisy.
DEFAULT_ROUNDS = 5
DEFAULT_DURATION_S = 3.0
TARGET = 0.9  # served / limit the served pipelines are held to (README, "Served-path efficiency")

SERVED, ALONE = "served", "stages alone"


@dataclass(frozen=True)
class Rate:
    """Images per second, and this process's CPU-seconds per image meanwhile."""

    images_per_s: float
    cpu_s_per_image: float


def _rate(step: Any, images_per_step: int, duration_s: float) -> Rate:
    """`Rate` of ``step()`` repeated for ``duration_s`` (at least once; after one warm-up call)."""
    step()
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while count == 0 or time.perf_counter() - start < duration_s:
        step()
        count += images_per_step
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Rate(count / wall, cpu / count)


def cpu_seconds_limit(cores: int, *cpu_s_per_image: float) -> float:
    """Images/s the cores allow when each image costs the sum of ``cpu_s_per_image``."""
    return cores / sum(cpu_s_per_image)


def preprocess_meter(spec: PipelineSpec, batch: int) -> Callable[[list[bytes], float], Rate]:
    """Preprocessing alone, built once: ``measure(images, duration_s)`` is the `Rate` of the
    served stage's DALI backend and threads on ``images`` in batches of ``batch``, on its device
    (each batch waited for to its end on a GPU)."""
    stage = unfused(spec).stage_by_role("preprocess")
    params = stage.params_as(PreprocessParams)
    preprocessor = DaliPreprocessor(
        params.spec, max_batch_size=batch, num_threads=params.num_threads
    )
    device = stage_device(stage)

    def measure(images: list[bytes], duration_s: float) -> Rate:
        chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
        state = {"i": 0}

        def step() -> Any:
            state["i"] += 1
            return preprocessor.run_batch(chunks[state["i"] % len(chunks)])

        return _rate(synchronized(step, device), batch, duration_s)

    return measure


def dnn_meter(spec: PipelineSpec, batch: int) -> Callable[[float], Rate]:
    """The DNN alone, loaded once: ``measure(duration_s)`` is the `Rate` of the served network
    (`models.runners`: torch, TorchScript or onnxruntime), threads and device on a
    preprocessed-shape batch already on that device (its speed does not depend on the source
    image size). torch's threads are the stage's while it measures, restored after (another
    pipeline's DNN in this process may want others)."""
    stage = unfused(spec).stage_by_role("inference")
    params = stage.params_as(DnnParams)
    device = stage_device(stage)
    (pixels_spec,) = stage.inputs
    pixels = np.random.default_rng(0).standard_normal((batch, *pixels_spec.dims))
    on_device = torch.from_numpy(pixels.astype(pixels_spec.numpy_dtype)).to(device)
    names = [t.name for t in stage.outputs]
    dims, dtype = pixels_spec.dims, str(pixels_spec.numpy_dtype)
    threads_before = torch.get_num_threads()
    try:
        run = load_chosen(
            params, names, dims, stage.batching.max_batch_size, dtype, device=device
        ).run
    finally:
        torch.set_num_threads(threads_before)
    done = synchronized(run, device)

    def measure(duration_s: float) -> Rate:
        before = torch.get_num_threads()
        torch.set_num_threads(params.torch_threads)
        try:
            return _rate(lambda: done(on_device), batch, duration_s)
        finally:
            torch.set_num_threads(before)

    return measure


def served_meter(
    url: str,
    spec: PipelineSpec,
    images: list[bytes],
    concurrency: int,
    server_pid: int | None = None,
) -> Callable[[float], tuple[Rate, dict[str, float]]]:
    """The served ensemble, one image per request, ``concurrency`` in flight, warmed up once
    here: ``measure(duration_s)`` is its `Rate` (the CPU-seconds are the client's, this
    process, per request) and, with ``server_pid``, the CPU ms per image each part of the server
    spent meanwhile (`profiling.process_cpu`: tritonserver itself, each model's python-backend
    stub)."""
    make_sender = image_senders(url, spec, images)
    warm_up(make_sender, concurrency)

    def measure(duration_s: float) -> tuple[Rate, dict[str, float]]:
        before = process_cpu.reading(server_pid) if server_pid else {}
        cpu = time.process_time()
        result = closed_loop(make_sender, concurrency, duration_s=duration_s)
        cpu = time.process_time() - cpu
        after = process_cpu.reading(server_pid) if server_pid else {}
        if result.errors:
            raise RuntimeError(f"{result.errors} requests failed during the served measurement")
        images_done = max(result.requests, 1)
        parts = {
            name: round(seconds * 1e3 / images_done, 3)
            for name, seconds in process_cpu.cpu_by_part(before, after).items()
            if seconds > 0
        }
        return Rate(result.throughput, cpu / images_done), parts

    return measure


def saturating_concurrency(spec: PipelineSpec) -> int:
    """Requests in flight that keep the served DNN busy: a full batch executing on each instance
    and one more waiting (``max batch x (instances + 1)``)."""
    stage = spec.stage_by_role("inference")
    return stage.batching.max_batch_size * (stage.instances + 1)


def _limits(row: dict[str, Any], served: Rate, cores: int, gpu: bool) -> dict[str, float]:
    """The limit (CPU-seconds, or the slower stage on a GPU) and the serial one, for ``row``'s
    stages alone and ``served``."""
    a, b = row["preprocess_alone"], row["dnn_alone"]
    cpu_limit = cpu_seconds_limit(
        cores, row["preprocess_cpu_ms"] / 1e3, row["dnn_cpu_ms"] / 1e3, served.cpu_s_per_image
    )
    limit = min(a, b) if gpu else cpu_limit
    serial = 1.0 / (1.0 / a + 1.0 / b)
    return {
        "served": served.images_per_s,
        "client_cpu_ms": served.cpu_s_per_image * 1e3,
        "limit": limit,
        "ratio": served.images_per_s / limit,
        "serial_limit": serial,
        "serial_ratio": served.images_per_s / serial,
    }


def round_row(
    pre: Rate,
    dnn: Rate,
    served: tuple[Rate, dict[str, float]],
    cores: int,
    gpu: bool,
    baseline: tuple[Rate, tuple[Rate, dict[str, float]]] | None = None,
) -> dict[str, Any]:
    """One size in one round: the stages alone, served, the limit and served / limit; with
    ``baseline`` (its DNN alone, its served rate: measured in the same round), its limit and
    ``served_speedup`` = served / baseline served."""
    rate, parts = served
    row: dict[str, Any] = {
        "preprocess_alone": pre.images_per_s,
        "preprocess_cpu_ms": pre.cpu_s_per_image * 1e3,
        "dnn_alone": dnn.images_per_s,
        "dnn_cpu_ms": dnn.cpu_s_per_image * 1e3,
    }
    row.update(_limits(row, rate, cores, gpu))
    row["served_cpu_ms"] = {**parts, "client": round(rate.cpu_s_per_image * 1e3, 3)}
    if baseline:
        base_dnn, (base_served, _) = baseline
        base_row = {
            **row,
            "dnn_alone": base_dnn.images_per_s,
            "dnn_cpu_ms": base_dnn.cpu_s_per_image * 1e3,
        }
        row["baseline"] = {
            "dnn_alone": base_dnn.images_per_s,
            "dnn_cpu_ms": base_row["dnn_cpu_ms"],
            **_limits(base_row, base_served, cores, gpu),
        }
        row["served_speedup"] = rate.images_per_s / base_served.images_per_s
    return row


def size_verdicts(
    size: str, rounds: list[dict[str, Any]], target: float | None
) -> dict[str, Verdict]:
    """A size's verdicts from its ``rounds`` (`round_row`s): served / limit against ``target``
    (none without one) and, with a baseline, the speedup against 1 (is it faster at all)."""
    out: dict[str, Verdict] = {}
    if target:
        ratio = Spread.of(r["ratio"] for r in rounds)
        out["ratio_verdict"] = Verdict(f"{size} served / limit", ratio, target)
    if all("served_speedup" in r for r in rounds):
        speedup = Spread.of(r["served_speedup"] for r in rounds)
        out["served_speedup_verdict"] = Verdict(
            f"{size} served speedup over the baseline", speedup, 1.0
        )
    return out


def size_summary(size: str, rounds: list[dict[str, Any]], target: float | None) -> dict[str, Any]:
    """A size's result from its ``rounds`` (`round_row`s, with their ``round`` and ``order``):
    every number the median of the rounds' (so served / limit is the median of the per-round
    ratios, not the ratio of two medians), the median and min–max of the ratios as
    ``*_spread``, the verdicts (`size_verdicts`); every round kept."""
    row: dict[str, Any] = {"size": size, **medians(rounds, skip=("round", "order"))}
    row["ratio_spread"] = Spread.of(r["ratio"] for r in rounds).to_dict()
    row["serial_ratio_spread"] = Spread.of(r["serial_ratio"] for r in rounds).to_dict()
    if "served_speedup" in row:
        row["served_speedup_spread"] = Spread.of(r["served_speedup"] for r in rounds).to_dict()
    row.update((key, v.to_dict()) for key, v in size_verdicts(size, rounds, target).items())
    row["rounds"] = rounds
    return row


def _cpu_table(spec: PipelineSpec, rows: list[dict[str, Any]]) -> Table:
    """Served CPU ms per image by process (medians of the rounds), beside what the stages cost
    alone."""
    table = Table(
        title="served: CPU ms per image, by process (the stages alone beside them; medians)"
    )
    parts = ["tritonserver", *(f"stub:{s.name}" for s in spec.stages), "client"]
    for column in ("size", *parts, "total", "pre alone", "DNN alone"):
        table.add_column(column.replace(f"{spec.name}_", ""), justify="right")
    for row in rows:
        served = row.get("served_cpu_ms", {})
        table.add_row(
            row["size"],
            *(f"{served.get(p, 0.0):.2f}" for p in parts),
            f"{sum(served.get(p, 0.0) for p in parts):.2f}",
            f"{row['preprocess_cpu_ms']:.2f}",
            f"{row['dnn_cpu_ms']:.2f}",
        )
    return table


def _table(spec: PipelineSpec, rows: list[dict[str, Any]], rounds: int, duration_s: float) -> Table:
    """Medians of the rounds per size, the min–max of served / limit (and of the speedup)."""
    baseline = any("baseline" in row for row in rows)
    target = next((row["ratio_verdict"]["target"] for row in rows if "ratio_verdict" in row), None)
    table = Table(
        title=f"cvserve bench efficiency: {spec.description}\nmedians of {rounds} round"
        f"{'s' if rounds != 1 else ''} ({duration_s:g} s per measurement, order alternating), "
        "\\[min-max] of the rounds"  # escaped: rich reads [min-max] as markup
    )
    columns = ("size", "preprocess alone", "DNN alone", "CPU ms/img pre+DNN+client")
    columns += ("limit", "served", "served / limit", "serial limit (old)", "served / serial")
    if baseline:
        columns += ("baseline served", "speedup")
    if target:
        columns += (f">= {target:g}",)
    for column in columns:
        spread = column in ("served / limit", "speedup")
        table.add_column(column, justify="right", no_wrap=spread)
    for row in rows:
        cpu = f"{row['preprocess_cpu_ms']:.1f}+{row['dnn_cpu_ms']:.1f}+{row['client_cpu_ms']:.1f}"
        table.add_row(
            row["size"],
            f"{row['preprocess_alone']:.1f}",
            f"{row['dnn_alone']:.1f}",
            cpu,
            f"{row['limit']:.1f}",
            f"{row['served']:.1f}",
            Spread.from_dict(row["ratio_spread"]).cell(),
            f"{row['serial_limit']:.1f}",
            f"{row['serial_ratio']:.2f}",
            *(
                (
                    f"{row['baseline']['served']:.1f}",
                    Spread.from_dict(row["served_speedup_spread"]).cell(),
                )
                if baseline
                else ()
            ),
            *((row["ratio_verdict"]["outcome"],) if target else ()),
        )
    return table


def bench_efficiency(
    spec: PipelineSpec,
    sizes: Sequence[tuple[int, int]] = EFFICIENCY_SIZES,
    duration_s: float = DEFAULT_DURATION_S,
    concurrency: int | None = None,
    out: Path | None = None,
    baseline: PipelineSpec | None = None,
    rounds: int = 1,
    target: float | None = TARGET,
) -> dict[str, Any]:
    """Prints preprocessing alone, DNN alone, served, limit and served / limit per size, as
    medians of ``rounds`` alternating rounds of ``duration_s`` per measurement with their
    min–max, and a line for each result the rounds leave undecided against ``target`` (served /
    limit; None: no target); writes JSON (``out`` or
    ``runs/bench-efficiency-<pipeline>-<time>.json``) with every round. With ``baseline`` (the
    same pipeline on another engine or setting, another ensemble name), its DNN alone and served
    rate are measured in the same rounds and server, alternating with ``spec``'s, and each size
    gets ``served_speedup`` = served / baseline served, per round and as their median.
    ``rounds=1`` measures each thing once (the command's default is `DEFAULT_ROUNDS`)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    console = Console(width=None if sys.stdout.isatty() else 140)
    stages = unfused(spec)  # a fused pipeline's stages alone are its stages apart
    batch = stages.stage_by_role("inference").batching.max_batch_size
    concurrency = concurrency or max(saturating_concurrency(s) for s in (spec, baseline) if s)
    gpu = stages.stage_by_role("inference").device == "gpu"
    cores = usable_cores()
    image_sets = {
        f"{width}x{height}": [synthetic_image(width, height, seed) for seed in range(2 * batch)]
        for width, height in sizes
    }
    specs = {"pipeline": spec, **({"baseline": baseline} if baseline else {})}
    # Built once, before the server starts: every round measures the same loaded objects.
    preprocess = preprocess_meter(spec, batch)
    dnn = {who: dnn_meter(s, batch) for who, s in specs.items()}
    per_size: dict[str, list[dict[str, Any]]] = {size: [] for size in image_sets}
    with serve_locally(list(specs.values())) as server:
        pid = server.process.pid if server.process else None
        served = {
            (who, size): served_meter(
                server.grpc_url, s, images, concurrency, pid if who == "pipeline" else None
            )
            for size, images in image_sets.items()
            for who, s in specs.items()
        }
        whos = list(specs)

        def alone(r: int) -> tuple[dict[str, Rate], dict[str, Rate]]:
            pre = {size: preprocess(images, duration_s) for size, images in image_sets.items()}
            return pre, {who: dnn[who](duration_s) for who in round_order(r, whos)}

        def serve(r: int) -> dict[tuple[str, str], tuple[Rate, dict[str, float]]]:
            return {
                (who, size): served[who, size](duration_s)
                for size in image_sets
                for who in round_order(r, whos)
            }

        for r, measured in enumerate(alternating_rounds(rounds, {SERVED: serve, ALONE: alone})):
            (pre, dnns), serves = measured[ALONE], measured[SERVED]
            order = list(measured)
            for size in image_sets:
                row = round_row(
                    pre[size],
                    dnns["pipeline"],
                    serves["pipeline", size],
                    cores,
                    gpu,
                    (dnns["baseline"], serves["baseline", size]) if baseline else None,
                )
                per_size[size].append({"round": r + 1, "order": order, **row})
                console.print(
                    f"  round {r + 1}/{rounds} ({order[0]} first) {size}: preprocessing alone "
                    f"{row['preprocess_alone']:.1f}, DNN alone {row['dnn_alone']:.1f}, served "
                    f"{row['served']:.1f} img/s = {row['ratio']:.2f} x limit"
                    + (
                        f"; baseline served {row['baseline']['served']:.1f} img/s, speedup "
                        f"{row['served_speedup']:.2f}x"
                        if baseline
                        else ""
                    )
                )
    rows = [size_summary(size, measured, target) for size, measured in per_size.items()]
    stage = stages.stage_by_role("inference")
    report = {
        "benchmark": "efficiency",
        "pipeline": spec.name,
        "arch": stage.params_as(DnnParams).label,
        "engine": stage.params_as(DnnParams).chosen_engine,
        "fused": is_fused(spec),
        "baseline_engine": unfused(baseline)
        .stage_by_role("inference")
        .params_as(DnnParams)
        .chosen_engine
        if baseline
        else None,
        "baseline_fused": bool(baseline and is_fused(baseline)),
        "batch": batch,
        "concurrency": concurrency,
        "instances": stage.instances,
        "torch_threads": stage.params_as(DnnParams).torch_threads,
        "dali_threads": stages.stage_by_role("preprocess").params_as(PreprocessParams).num_threads,
        "cores": cores,
        "rounds": rounds,
        "duration_s": duration_s,
        "order": f"{SERVED!r}, {ALONE!r}: {ORDER_RULE}",
        "target": target,
        "limit_rule": "min(a, b)"
        if gpu
        else "cores / (CPU-s per image: preprocess alone + DNN alone + client per request)",
        "serial_limit_rule": "1 / (1/a + 1/b) (each stage on every core; kept for comparison)",
        "summary_rule": "every number the median of the rounds'; *_spread: median, min, max",
        "machine": machine_info(),
        "results": rows,
    }
    console.print(_table(spec, rows, rounds, duration_s))
    console.print(_cpu_table(spec, rows))
    for size, measured in per_size.items():
        for verdict in size_verdicts(size, measured, target).values():
            if not verdict.decided:  # a line of its own, not a quiet pass or fail
                console.print(verdict.line(), markup=False, soft_wrap=True)
    write_report(report, f"bench-efficiency-{spec.name}", out, console=console)
    return report
