"""`cvserve bench engines`: every network × engine × precision × batch on this CPU or GPU (the
stage's device: ``--device gpu`` measures on ``cuda:0``), one run, one JSON.

Each engine (`models.runners`) runs the DNN stage's network alone on the same seeded batch of
the preprocessed shape, on the stage's device; images/s is the better of two timed passes, each
call waited for to its end on a GPU (noise on a shared machine only slows a run down).
Agreement is against torch fp32 eager on the same batch and device: the largest
absolute difference of every output, and for a classifier the share of images whose top-1 class
is the same. An engine that cannot run a network falls back (`models.runners.load_engine`); the
row says which engine ran and why.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
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
    images_per_s,
    record,
    rel_diff,
    stage_device,
    synchronized,
)
from cvserve.models.params import ENGINES, DnnParams
from cvserve.models.runners import load_engine
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import unfused
from cvserve.profiling.machine import machine_info, write_report

DEFAULT_BATCHES: tuple[int, ...] = (1, 8)


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


def bench_engines(
    specs: Sequence[PipelineSpec],
    engines: Sequence[str] = ENGINES,
    batches: Sequence[int] = DEFAULT_BATCHES,
    duration_s: float = 3.0,
    out: Path | None = None,
    console: Console | None = None,
    store: bool = False,
) -> dict[str, Any]:
    """Rows of network × engine × batch; prints a table and writes the JSON report. ``store``:
    each network and batch measured on every engine it can run on replaces this machine's stored
    measurement (`models.engine_choice`), so served stages choose from this run."""
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
            for engine in engines:
                for precision in _precisions(engine, device):
                    try:
                        asked = dataclasses.replace(params, engine=engine, precision=precision)
                    except ValueError as exc:  # an engine this kind of model cannot run on
                        console.print(f"  {params.label} {engine}: skipped ({exc})")
                        continue
                    loaded = load_engine(asked, names, device=device)
                    rate = images_per_s(synchronized(loaded.run, device), x, duration_s, 0)
                    row = {
                        "network": params.label,
                        "pipeline": spec.name,
                        "engine": engine,
                        "precision": precision,
                        "ran_on": f"{loaded.engine}/{loaded.precision}",
                        "fallback": loaded.fallback,
                        "batch": batch,
                        "device": device,
                        "threads": params.torch_threads,
                        "images_per_s": round(rate, 2),
                        **agreement(loaded.run(x), reference, classifier),
                    }
                    rows.append(row)
                    measured.setdefault((spec.name, batch), []).append(
                        Measured(
                            engine,
                            precision,
                            row["images_per_s"],
                            rel_diff(loaded.run(x), reference),
                            loaded.fallback is None,
                            row["ran_on"] if loaded.fallback is None else loaded.fallback,
                        )
                    )
                    console.print(
                        f"  {params.label} {engine}/{precision} batch {batch}: {rate:.1f} img/s"
                        + (f" (fell back: {loaded.fallback})" if loaded.fallback else "")
                    )
    stored = _store(specs, measured) if store else []
    for path in dict.fromkeys(stored):
        console.print(f"stored for this machine: {path}")
    torch_rates = {
        (r["network"], r["batch"]): r["images_per_s"] for r in rows if r["engine"] == "torch"
    }
    for row in rows:
        base = torch_rates.get((row["network"], row["batch"]))
        row["vs_torch"] = round(row["images_per_s"] / base, 2) if base else None
    report = {
        "benchmark": "engines",
        "reference": "torch fp32 eager (onnxruntime for an ONNX file) on the same batch",
        "duration_s": duration_s,
        "machine": machine_info(),
        "results": rows,
    }
    table = Table(title="cvserve bench engines (images/s, agreement with torch fp32)")
    columns = ("network", "engine", "ran on", "batch", "img/s", "vs torch", "max |diff|", "top-1")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["network"],
            f"{row['engine']}/{row['precision']}",
            row["ran_on"],
            str(row["batch"]),
            f"{row['images_per_s']:.1f}",
            "" if row["vs_torch"] is None else f"{row['vs_torch']:.2f}",
            f"{row['max_abs_diff']:.2g}",
            "" if "top1_agreement" not in row else f"{row['top1_agreement']:.2f}",
        )
    console.print(table)
    path = write_report(report, "bench-engines", out)
    console.print(f"wrote {path}")
    return report
