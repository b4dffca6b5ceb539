"""`cvserve bench engines`: every network × engine × precision × batch on this CPU or GPU (the
stage's device: ``--device gpu`` measures on ``cuda:0``), one run, one JSON.

Each engine (`models.runners`) runs the DNN stage's network alone on the same seeded batch of
the preprocessed shape, on the stage's device, each call waited for to its end on a GPU. For
one network and batch every engine is loaded once, then timed in alternating rounds
(`profiling.bench.rounds`): one pass of each engine per round, the order reversed each round;
images/s is the median of the rounds and ``vs_torch`` the median of the per-round ratios to
torch fp32 (timed in the same round), each with the min–max of the rounds beside it.
Agreement is against torch fp32 eager on the same batch and device: the largest
absolute difference of every output, and for a classifier the share of images whose top-1 class
is the same. An engine that cannot run a network falls back (`models.runners.load_engine`); the
row says which engine ran and why.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from cvserve.models.engine_choice import (
    BOUNDS,
    Measured,
    candidates,
    host,
    record,
    rel_diff,
    stage_device,
    synchronized,
)
from cvserve.models.params import ENGINES, DnnParams
from cvserve.models.runners import load_engine
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import unfused
from cvserve.profiling.bench.rounds import (
    ORDER_RULE,
    Spread,
    alternating_rounds,
    per_round_ratios,
)
from cvserve.profiling.machine import machine_info, write_report

DEFAULT_BATCHES: tuple[int, ...] = (1, 8)
# The command's defaults (`cvserve bench engines`): 3 rounds of a 2 s pass per engine, about the
# time the better-of-two 3 s passes took, now alternating and with a spread.
DEFAULT_ROUNDS = 3
DEFAULT_DURATION_S = 2.0
MIN_CALLS = 2  # per pass: a slow engine at a large batch still times more than one call
REFERENCE = ("torch", "fp32")  # what vs_torch divides by


def agreement(got: list[Any], reference: list[np.ndarray], classes: bool) -> dict:
    """Max abs difference over every output (torch or NumPy); top-1 agreement of the first (a
    classifier's)."""
    got = host(got)
    diff = max(
        float(np.max(np.abs(g.astype(np.float64) - r))) if g.size else 0.0
        for g, r in zip(got, reference, strict=True)
    )
    out: dict[str, Any] = {"max_abs_diff": diff}
    if classes:
        top1 = got[0].reshape(len(got[0]), -1).argmax(1) == reference[0].reshape(
            len(reference[0]), -1
        ).argmax(1)
        out["top1_agreement"] = float(top1.mean())
    return out


def _store(
    specs: Sequence[PipelineSpec], measured: dict[tuple[str, int], list[Measured]]
) -> list[Path]:
    """Record each (network, batch) measured on all its candidate engines; the store paths."""
    paths = []
    for spec in specs:
        stage = unfused(spec).stage_by_role("inference")
        params = dataclasses.replace(stage.params_as(DnnParams), engine=None)
        device = stage_device(stage)
        wanted = set(candidates(params, device))
        for (name, batch), rows in measured.items():
            if name == spec.name and {(m.engine, m.precision) for m in rows} >= wanted:
                # Within bound by the rule `engine_choice` measures with.
                kept = [
                    dataclasses.replace(
                        m,
                        within_bound=m.within_bound and m.rel_diff <= BOUNDS[m.precision],
                    )
                    for m in rows
                    if (m.engine, m.precision) in wanted
                ]
                shape = tuple(224 if d < 0 else d for d in stage.inputs[0].dims)
                paths.append(record(params, shape, batch, kept, device))
    return paths


def _precisions(engine: str, device: str) -> tuple[str, ...]:
    """The precisions ``engine`` is measured at on ``device``: reduced ones where it runs them
    (OpenVINO bf16 on the CPU; torch fp16 and bf16 on a GPU)."""
    if device.startswith("cuda"):
        return ("fp32", "fp16", "bf16") if engine.startswith("torch") else ("fp32",)
    return ("fp32", "bf16") if engine == "openvino" else ("fp32",)


def pass_rate(run: Callable[[Any], Any], x: Any, duration_s: float) -> float:
    """Images/s of ``run(x)`` over one pass of at least ``duration_s`` and `MIN_CALLS` calls
    (``run`` returns when its work is done: `synchronized`)."""
    calls, start = 0, time.perf_counter()
    while calls < MIN_CALLS or time.perf_counter() - start < duration_s:
        run(x)
        calls += 1
    return calls * len(x) / (time.perf_counter() - start)


def engine_rounds(
    runs: dict[tuple[str, str], Callable[[Any], Any]], x: Any, rounds: int, duration_s: float
) -> dict[tuple[str, str], list[float]]:
    """Per (engine, precision), its images/s in each of ``rounds`` alternating rounds (one
    `pass_rate` of every engine per round, the order reversed each round)."""
    parts = {key: (lambda _r, run=run: pass_rate(run, x, duration_s)) for key, run in runs.items()}
    measured = alternating_rounds(rounds, parts)
    return {key: [r[key] for r in measured] for key in runs}


def rates_summary(rates: dict[tuple[str, str], list[float]]) -> dict[tuple[str, str], dict]:
    """Per (engine, precision), from its per-round images/s: ``images_per_s`` (the median),
    its spread, and ``vs_torch`` = the median of the per-round ratios to torch fp32 with its
    spread (None without torch fp32 among ``rates``)."""
    reference = rates.get(REFERENCE)
    out = {}
    for key, per_round in rates.items():
        spread = Spread.of(per_round)
        row: dict[str, Any] = {
            "images_per_s": round(spread.median, 2),
            "images_per_s_spread": spread.to_dict(),
            "rounds": [round(v, 2) for v in per_round],
            "vs_torch": None,
        }
        if reference:
            ratio = Spread.of(per_round_ratios(per_round, reference))
            row["vs_torch"] = round(ratio.median, 2)
            row["vs_torch_spread"] = ratio.to_dict()
        out[key] = row
    return out


def bench_engines(
    specs: Sequence[PipelineSpec],
    engines: Sequence[str] = ENGINES,
    batches: Sequence[int] = DEFAULT_BATCHES,
    duration_s: float = DEFAULT_DURATION_S,
    out: Path | None = None,
    console: Console | None = None,
    store: bool = False,
    rounds: int = DEFAULT_ROUNDS,
) -> dict[str, Any]:
    """Rows of network × engine × batch; prints a table and writes the JSON report. Every engine
    of a network and batch is timed in ``rounds`` alternating rounds of one ``duration_s`` pass
    (medians, min–max beside them). ``store``: each network and batch measured on every engine it
    can run on replaces this machine's stored measurement (`models.engine_choice`, the median
    images/s), so served stages choose from this run."""
    console = console or Console(width=None if sys.stdout.isatty() else 130)
    rows: list[dict[str, Any]] = []
    measured: dict[tuple[str, int], list[Measured]] = {}
    for spec in specs:
        stage = unfused(spec).stage_by_role("inference")
        params = stage.params_as(DnnParams)
        (pixels,) = stage.inputs
        shape = tuple(224 if d < 0 else d for d in pixels.dims)
        names = [t.name for t in stage.outputs]
        classifier = any(
            s.role == "postprocess" and getattr(s.params, "function", "") == "top_k"
            for s in unfused(spec).stages
        )
        reference_params = dataclasses.replace(params, engine=None, precision="fp32")
        if params.model_format == "onnx":
            reference_params = dataclasses.replace(reference_params, engine="onnxruntime")
        device = stage_device(stage)
        reference_run = load_engine(reference_params, names, device=device).run
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(pixels.numpy_dtype)
            reference = [r.astype(np.float64) for r in host(reference_run(x))]
            loaded: dict[tuple[str, str], Any] = {}
            for engine in engines:
                for precision in _precisions(engine, device):
                    try:
                        asked = dataclasses.replace(params, engine=engine, precision=precision)
                    except ValueError as exc:  # an engine this kind of model cannot run on
                        console.print(f"  {params.label} {engine}: skipped ({exc})")
                        continue
                    loaded[engine, precision] = load_engine(asked, names, device=device)
            # The answers first: each engine's first call is also its warm-up.
            answers = {key: loaded[key].run(x) for key in loaded}
            runs = {key: synchronized(one.run, device) for key, one in loaded.items()}
            for run in runs.values():  # a second call: what a GPU captures or tunes on it
                run(x)
            summary = rates_summary(engine_rounds(runs, x, rounds, duration_s))
            for (engine, precision), one in loaded.items():
                row = {
                    "network": params.label,
                    "pipeline": spec.name,
                    "engine": engine,
                    "precision": precision,
                    "ran_on": f"{one.engine}/{one.precision}",
                    "fallback": one.fallback,
                    "batch": batch,
                    "device": device,
                    "threads": params.torch_threads,
                    **summary[engine, precision],
                    **agreement(answers[engine, precision], reference, classifier),
                }
                rows.append(row)
                measured.setdefault((spec.name, batch), []).append(
                    Measured(
                        engine,
                        precision,
                        row["images_per_s"],
                        rel_diff(answers[engine, precision], reference),
                        one.fallback is None,
                        row["ran_on"] if one.fallback is None else one.fallback,
                    )
                )
                console.print(
                    f"  {params.label} {engine}/{precision} batch {batch}: "
                    f"{Spread.from_dict(row['images_per_s_spread']).cell(1)} img/s"
                    + (f" (fell back: {one.fallback})" if one.fallback else "")
                )
    stored = _store(specs, measured) if store else []
    for path in dict.fromkeys(stored):
        console.print(f"stored for this machine: {path}")
    report = {
        "benchmark": "engines",
        "reference": "torch fp32 eager (onnxruntime for an ONNX file) on the same batch",
        "rounds": rounds,
        "duration_s": duration_s,
        "order": f"the engines as listed: {ORDER_RULE}",
        "summary_rule": "images_per_s: median of the rounds; vs_torch: median of the per-round "
        "ratios to torch fp32; *_spread: median, min, max",
        "machine": machine_info(),
        "results": rows,
    }
    table = Table(
        title=f"cvserve bench engines: images/s and vs torch fp32, medians of {rounds} "
        f"alternating rounds ({duration_s:g} s passes) \\[min-max]; agreement with torch fp32"
    )
    columns = ("network", "engine", "ran on", "batch", "img/s", "vs torch", "max |diff|", "top-1")
    for column in columns:
        table.add_column(column, justify="right", no_wrap=column in ("img/s", "vs torch"))
    for row in rows:
        table.add_row(
            row["network"],
            f"{row['engine']}/{row['precision']}",
            row["ran_on"],
            str(row["batch"]),
            Spread.from_dict(row["images_per_s_spread"]).cell(1),
            "" if row["vs_torch"] is None else Spread.from_dict(row["vs_torch_spread"]).cell(),
            f"{row['max_abs_diff']:.2g}",
            "" if "top1_agreement" not in row else f"{row['top1_agreement']:.2f}",
        )
    console.print(table)
    write_report(report, "bench-engines", out, console=console)
    return report
