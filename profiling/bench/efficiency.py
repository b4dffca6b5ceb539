"""`cvserve bench efficiency`: the served ensemble against what its stages do alone.

Measured in one run, same images, same batch size: preprocessing alone (the DALI backend the
served model uses, in this process), the DNN alone (the same network, engine and threads), and
the served ensemble over gRPC, each with the CPU-seconds it spent per image (this process's CPU
time: every thread of DALI, torch, onnxruntime, and of the client). The **limit** is the slower
stage on a GPU. On a CPU-only machine it is what the cores can do when all they do is the work
itself: ``cores / (CPU-s per image of preprocessing alone + of the DNN alone + of the client per
request)`` — the client shares the machine. The serial composition ``1 / (1/a + 1/b)`` (right
only when each stage uses every core) is kept beside it as ``serial_limit``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
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
from cvserve.profiling.load import closed_loop, image_senders, warm_up
from cvserve.profiling.machine import machine_info, write_report

EFFICIENCY_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080))


@dataclass(frozen=True)
class Rate:
    """Images per second, and this process's CPU-seconds per image meanwhile."""

    images_per_s: float
    cpu_s_per_image: float


def _rate(step: Any, images_per_step: int, duration_s: float) -> Rate:
    """`Rate` of ``step()`` repeated for ``duration_s`` (after one warm-up call)."""
    step()
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < duration_s:
        step()
        count += images_per_step
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Rate(count / wall, cpu / count)


def cpu_seconds_limit(cores: int, *cpu_s_per_image: float) -> float:
    """Images/s the cores allow when each image costs the sum of ``cpu_s_per_image``."""
    return cores / sum(cpu_s_per_image)


def preprocess_rate(spec: PipelineSpec, images: list[bytes], batch: int, duration_s: float) -> Rate:
    """Preprocessing alone: the served stage's DALI backend and threads, on its device (each
    batch waited for to its end on a GPU)."""
    stage = unfused(spec).stage_by_role("preprocess")
    params = stage.params_as(PreprocessParams)
    preprocessor = DaliPreprocessor(
        params.spec, max_batch_size=batch, num_threads=params.num_threads
    )
    chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
    state = {"i": 0}

    def step() -> Any:
        state["i"] += 1
        return preprocessor.run_batch(chunks[state["i"] % len(chunks)])

    return _rate(synchronized(step, stage_device(stage)), batch, duration_s)


def dnn_rate(spec: PipelineSpec, batch: int, duration_s: float) -> Rate:
    """The DNN alone: the served network (`models.runners`: torch, TorchScript or
    onnxruntime), threads and device on a preprocessed-shape batch already on that device (its
    speed does not depend on the source image size)."""
    stage = unfused(spec).stage_by_role("inference")
    params = stage.params_as(DnnParams)
    device = stage_device(stage)
    (pixels_spec,) = stage.inputs
    pixels = np.random.default_rng(0).standard_normal((batch, *pixels_spec.dims))
    on_device = torch.from_numpy(pixels.astype(pixels_spec.numpy_dtype)).to(device)
    threads_before = torch.get_num_threads()
    names = [t.name for t in stage.outputs]
    dims, dtype = pixels_spec.dims, str(pixels_spec.numpy_dtype)
    run = load_chosen(params, names, dims, stage.batching.max_batch_size, dtype, device=device).run
    done = synchronized(run, device)
    try:
        return _rate(lambda: done(on_device), batch, duration_s)
    finally:
        torch.set_num_threads(threads_before)


def served_rate(
    url: str,
    spec: PipelineSpec,
    images: list[bytes],
    concurrency: int,
    duration_s: float,
    server_pid: int | None = None,
) -> tuple[Rate, dict[str, float]]:
    """The served ensemble, one image per request, ``concurrency`` in flight; the CPU-seconds
    are the client's (this process) per request. With ``server_pid``, also the CPU ms per image
    each part of the server spent meanwhile (`profiling.process_cpu`: tritonserver itself, each
    model's python-backend stub)."""

    make_sender = image_senders(url, spec, images)
    warm_up(make_sender, concurrency)
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


def _dnn_alone(spec: PipelineSpec, batch: int, duration_s: float) -> Rate:
    """The DNN alone: the better of two passes (noise on a shared machine only slows one)."""
    return max(
        dnn_rate(spec, batch, duration_s),
        dnn_rate(spec, batch, duration_s),
        key=lambda r: r.images_per_s,
    )


def _cpu_table(spec: PipelineSpec, rows: list[dict[str, Any]]) -> Table:
    """Served CPU ms per image by process, beside what the stages cost alone."""
    table = Table(title="served: CPU ms per image, by process (the stages alone beside them)")
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


def bench_efficiency(
    spec: PipelineSpec,
    sizes: Sequence[tuple[int, int]] = EFFICIENCY_SIZES,
    duration_s: float = 10.0,
    concurrency: int | None = None,
    out: Path | None = None,
    baseline: PipelineSpec | None = None,
) -> dict[str, Any]:
    """Prints preprocessing alone, DNN alone, served, limit and served/limit per size; writes
    JSON (``out`` or ``runs/bench-efficiency-<pipeline>-<time>.json``). With ``baseline`` (the
    same pipeline on another engine, another ensemble name), its DNN alone and served rate are
    measured in the same run and server, alternating with ``spec``'s, and each size gets
    ``served_speedup`` = served / baseline served."""
    console = Console(width=None if sys.stdout.isatty() else 140)
    stages = unfused(spec)  # a fused pipeline's stages alone are its stages apart
    batch = stages.stage_by_role("inference").batching.max_batch_size
    concurrency = concurrency or max(saturating_concurrency(s) for s in (spec, baseline) if s)
    gpu = stages.stage_by_role("inference").device == "gpu"
    rows: list[dict[str, Any]] = []
    image_sets = {
        size: [synthetic_image(size[0], size[1], seed) for seed in range(2 * batch)]
        for size in sizes
    }
    # The DNN alone, before and after the preprocessing runs: the better of the two (noise on a
    # shared machine only ever slows a run down).
    dnn_first = dnn_rate(spec, batch, duration_s)
    for (width, height), images in image_sets.items():
        pre = preprocess_rate(spec, images, batch, duration_s)
        rows.append(
            {
                "size": f"{width}x{height}",
                "preprocess_alone": pre.images_per_s,
                "preprocess_cpu_ms": pre.cpu_s_per_image * 1e3,
            }
        )
        console.print(f"  {width}x{height}: preprocessing alone {pre.images_per_s:.1f} img/s")
    dnn = max(dnn_first, dnn_rate(spec, batch, duration_s), key=lambda r: r.images_per_s)
    console.print(
        f"  DNN alone: {dnn.images_per_s:.1f} img/s (first run {dnn_first.images_per_s:.1f}; "
        "the better of two)"
    )
    base_dnn = _dnn_alone(baseline, batch, duration_s) if baseline else None
    if base_dnn:
        console.print(f"  baseline DNN alone: {base_dnn.images_per_s:.1f} img/s")
    cores = usable_cores()
    for row in rows:
        row.update(dnn_alone=dnn.images_per_s, dnn_cpu_ms=dnn.cpu_s_per_image * 1e3)
    with serve_locally([spec, *([baseline] if baseline else [])]) as server:
        for row, images in zip(rows, image_sets.values(), strict=True):
            if baseline and base_dnn:  # baseline first, then the pipeline: alternating
                base_served, _ = served_rate(
                    server.grpc_url, baseline, images, concurrency, duration_s
                )
            pid = server.process.pid if server.process else None
            served, parts = served_rate(server.grpc_url, spec, images, concurrency, duration_s, pid)
            row.update(_limits(row, served, cores, gpu))
            row["served_cpu_ms"] = {**parts, "client": round(served.cpu_s_per_image * 1e3, 3)}
            console.print(
                f"  {row['size']}: served {served.images_per_s:.1f} img/s = "
                f"{row['ratio']:.2f} x limit"
            )
            if baseline and base_dnn:
                base_row = {**row, "dnn_alone": base_dnn.images_per_s}
                base_row["dnn_cpu_ms"] = base_dnn.cpu_s_per_image * 1e3
                base = _limits(base_row, base_served, cores, gpu)
                row["baseline"] = {
                    "dnn_alone": base_dnn.images_per_s,
                    "dnn_cpu_ms": base_row["dnn_cpu_ms"],
                    **base,
                }
                row["served_speedup"] = served.images_per_s / base_served.images_per_s
                console.print(
                    f"  {row['size']}: baseline served {base_served.images_per_s:.1f} img/s; "
                    f"speedup {row['served_speedup']:.2f}x"
                )
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
        "limit_rule": "min(a, b)"
        if gpu
        else "cores / (CPU-s per image: preprocess alone + DNN alone + client per request)",
        "serial_limit_rule": "1 / (1/a + 1/b) (each stage on every core; kept for comparison)",
        "machine": machine_info(),
        "results": rows,
    }
    table = Table(title=f"cvserve bench efficiency: {spec.description}")
    columns = ("size", "preprocess alone", "DNN alone", "CPU ms/img pre+DNN+client")
    columns += ("limit", "served", "served / limit", "serial limit (old)", "served / serial")
    if baseline:
        columns += ("baseline served", "speedup")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        cpu = f"{row['preprocess_cpu_ms']:.1f}+{row['dnn_cpu_ms']:.1f}+{row['client_cpu_ms']:.1f}"
        table.add_row(
            row["size"],
            f"{row['preprocess_alone']:.1f}",
            f"{row['dnn_alone']:.1f}",
            cpu,
            f"{row['limit']:.1f}",
            f"{row['served']:.1f}",
            f"{row['ratio']:.2f}",
            f"{row['serial_limit']:.1f}",
            f"{row['serial_ratio']:.2f}",
            *(
                (f"{row['baseline']['served']:.1f}", f"{row['served_speedup']:.2f}")
                if baseline
                else ()
            ),
        )
    console.print(table)
    console.print(_cpu_table(spec, rows))
    out = write_report(report, f"bench-efficiency-{spec.name}", out)
    console.print(f"wrote {out}")
    return report
