"""`cvserve bench preprocess`: images/s of every preprocessing backend by image size × batch.

All backends run the same `PreprocessSpec` on the same generated JPEGs, one after the other in
this process. The issue's target pair (DALI CPU vs the OpenCV single-thread loop, batch 32,
1920x1080) is measured again side by side in alternating rounds (`profiling.bench.rounds`): the
ratio is taken per round, reported as the median of the rounds with their min–max, and a ratio
whose rounds spread wider than its distance to the target says so in a line of its own.
Then cvserve's DALI stage against the same graph run bare, stage / bare per round
(`profiling.bench.bare_dali`). ``dali-cpu-steps`` is DALI timed step by step (what
``PREPROCESS_TIMES`` costs);
``opencv-reduced-*`` decode JPEGs at a reduced scale where the contract allows (the factor per
size is in the report).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import nvidia.dali
import torch
from rich.console import Console
from rich.table import Table

from cvserve.deploy.host import usable_cores
from cvserve.preprocess.backends import backend_class, make_preprocessor
from cvserve.preprocess.preprocessor import Preprocessor
from cvserve.preprocess.reduced_decode import jpeg_reduction
from cvserve.preprocess.sniff import sniff
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling.bench.bare_dali import stage_vs_bare_section
from cvserve.profiling.bench.rounds import (
    ORDER_RULE,
    Spread,
    Verdict,
    alternating_rounds,
    per_round_ratios,
)
from cvserve.profiling.machine import machine_info, write_report

BENCH_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080), (3840, 2160))
BENCH_BATCHES: tuple[int, ...] = (1, 8, 32)
DISTINCT_IMAGES = 4  # different JPEGs per size, cycled to fill a batch
TARGET_ROUNDS = 5  # rounds of the target pair: two noisy ones do not move the median
# Where cvserve's DALI stage is read against the same graph bare (`profiling.bench.bare_dali`).
STAGE_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080))
STAGE_BATCHES: tuple[int, ...] = (8, 32)


@dataclass(frozen=True)
class BackendConfig:
    """One column of the table: a backend, its CPU threads, device and options."""

    label: str
    backend: str
    threads: int
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """A throughput ratio the issue asks for: ``faster`` / ``baseline`` ≥ ``ratio``."""

    faster: str
    baseline: str
    size: tuple[int, int]
    batch: int
    ratio: float


def wide_console() -> Console:
    """A console that does not squeeze the table to 80 columns when output is piped."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def cores() -> int:
    return usable_cores()


def cpu_configs(threads: int | None = None) -> list[BackendConfig]:
    n = threads or cores()
    return [
        BackendConfig("dali-cpu", "dali", n),
        BackendConfig("dali-cpu-steps", "dali", n, options={"step_times": True}),
        BackendConfig("opencv-loop", "opencv", 1),
        BackendConfig(f"opencv-{n}t", "opencv", n),
        BackendConfig("opencv-reduced-loop", "opencv-reduced", 1),
        BackendConfig(f"opencv-reduced-{n}t", "opencv-reduced", n),
        BackendConfig(f"torchvision-{n}t", "torchvision", n),
    ]


CPU_TARGET = Target("dali-cpu", "opencv-loop", (1920, 1080), 32, 1.3)


def build(config: BackendConfig, spec: PreprocessSpec, max_batch_size: int) -> Preprocessor:
    return make_preprocessor(
        replace(spec, device=config.device),
        config.backend,
        max_batch_size,
        config.threads,
        **config.options,
    )


def run_checked(pre: Preprocessor, batch: Sequence[bytes], gpu: bool) -> None:
    for result in pre(batch):
        if isinstance(result, PreprocessError):
            raise result
    if gpu:
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Rate:
    """Throughput (wall clock) and CPU time this process spent per image (all its threads): the
    second is what a shared machine's load barely changes."""

    images_per_s: float
    cpu_ms_per_image: float


def throughput(
    pre: Preprocessor, batch: Sequence[bytes], min_time_s: float, gpu: bool = False
) -> Rate:
    """`Rate` over as many runs of ``batch`` as fit in ``min_time_s`` (at least one)."""
    images = 0
    start, cpu = time.perf_counter(), time.process_time()
    while True:
        run_checked(pre, batch, gpu)
        images += len(batch)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s:
            return Rate(images / elapsed, (time.process_time() - cpu) * 1000 / images)


def side_by_side(
    a: Preprocessor,
    b: Preprocessor,
    batch: Sequence[bytes],
    rounds: int,
    gpu: bool,
    min_time_s: float = 0.0,
) -> list[tuple[Rate, Rate]]:
    """Per round, the `Rate` of ``a`` and of ``b`` on ``batch`` (each `throughput` over
    ``min_time_s``, at least one batch), back to back, ``a`` first in the first round and the
    order reversed each round after (load on a shared machine then hits both alike)."""
    measured = alternating_rounds(
        rounds,
        {
            "a": lambda _r: throughput(a, batch, min_time_s, gpu),
            "b": lambda _r: throughput(b, batch, min_time_s, gpu),
        },
    )
    return [(r["a"], r["b"]) for r in measured]


def target_result(target: Target, rounds: list[tuple[Rate, Rate]]) -> dict[str, Any]:
    """The target pair's result from its ``rounds`` (`side_by_side`): the median rates and CPU
    ms per image, ``measured_ratio`` = the median of the per-round ratios with its spread,
    ``met`` (the median at or above the target) and the `Verdict`'s outcome (``undecided`` when
    the rounds spread wider than the median's distance to the target); every round kept."""
    ratios = per_round_ratios(
        [fast.images_per_s for fast, _ in rounds], [base.images_per_s for _, base in rounds]
    )
    spread = Spread.of(ratios)
    verdict = Verdict(f"{target.faster} / {target.baseline}", spread, target.ratio)

    def median(values: Any) -> float:
        return Spread.of(values).median

    return {
        **asdict(target),
        "faster_images_per_s": round(median(f.images_per_s for f, _ in rounds), 1),
        "baseline_images_per_s": round(median(b.images_per_s for _, b in rounds), 1),
        "faster_cpu_ms_per_image": round(median(f.cpu_ms_per_image for f, _ in rounds), 2),
        "baseline_cpu_ms_per_image": round(median(b.cpu_ms_per_image for _, b in rounds), 2),
        "measured_ratio": round(spread.median, 2),
        "ratio_spread": spread.to_dict(),
        "met": spread.median >= target.ratio,
        "verdict": verdict.to_dict(),
        "order": f"{target.faster}, {target.baseline}: {ORDER_RULE}",
        "rounds": [
            {
                "round": i + 1,
                "faster_images_per_s": round(fast.images_per_s, 1),
                "baseline_images_per_s": round(base.images_per_s, 1),
                "ratio": ratio,
            }
            for i, ((fast, base), ratio) in enumerate(zip(rounds, ratios, strict=True))
        ],
        "load_average": os.getloadavg(),
    }


def bench_preprocess(
    configs: Sequence[BackendConfig] | None = None,
    sizes: Sequence[tuple[int, int]] = BENCH_SIZES,
    batches: Sequence[int] = BENCH_BATCHES,
    spec: PreprocessSpec | None = None,
    min_time_s: float = 0.5,
    target: Target | None = CPU_TARGET,
    target_rounds: int = TARGET_ROUNDS,
    out: Path | None = None,
    title: str = "cvserve bench preprocess",
    console: Console | None = None,
    stage_vs_bare: bool = True,
) -> dict[str, Any]:
    """Measure, print the table and the target ratio, write JSON (``out`` or
    ``runs/bench-preprocess-<time>.json``); returns the report. ``stage_vs_bare``: also cvserve's
    DALI CPU stage beside the same graph run bare (`profiling.bench.bare_dali`) at the sizes and
    batches of `STAGE_SIZES` and `STAGE_BATCHES` measured here."""
    console = console or wide_console()
    configs = list(configs or cpu_configs())
    spec = spec or PreprocessSpec()
    torch.set_num_threads(1)  # one intra-op thread per worker: erratic otherwise on few cores
    rows: list[dict[str, Any]] = []
    reductions: dict[str, int] = {}
    target_summary: dict[str, Any] | None = None
    for width, height in sizes:
        images = [synthetic_image(width, height, seed) for seed in range(DISTINCT_IMAGES)]
        kb = sum(map(len, images)) / len(images) / 1024
        reduction = jpeg_reduction(sniff(images[0], spec.max_pixels), spec)
        reductions[f"{width}x{height}"] = reduction
        console.print(f"  {width}x{height}: opencv-reduced decodes at 1/{reduction}")
        built = {c.label: build(c, spec, max(batches)) for c in configs}
        for config in configs:
            pre = built[config.label]
            gpu = config.device == "gpu"
            # Warm-up at the largest batch: pipelines, thread pools, buffers reach full size.
            run_checked(pre, [images[i % len(images)] for i in range(max(batches))], gpu)
            for batch_size in batches:
                batch = [images[i % len(images)] for i in range(batch_size)]
                rate = throughput(pre, batch, min_time_s, gpu)
                rows.append(
                    {
                        "backend": config.label,
                        "size": f"{width}x{height}",
                        "jpeg_kb": round(kb, 1),
                        "batch": batch_size,
                        "images_per_s": round(rate.images_per_s, 1),
                        "cpu_ms_per_image": round(rate.cpu_ms_per_image, 2),
                    }
                )
                console.print(
                    f"  {config.label} {width}x{height} batch {batch_size}: "
                    f"{rate.images_per_s:.1f} img/s, {rate.cpu_ms_per_image:.1f} CPU ms/img"
                )
        if (
            target
            and target.size == (width, height)
            and {target.faster, target.baseline} <= set(built)
        ):
            batch = [images[i % len(images)] for i in range(target.batch)]
            gpu = any(c.device == "gpu" for c in configs if c.label == target.faster)
            measured = side_by_side(
                built[target.faster], built[target.baseline], batch, target_rounds, gpu, min_time_s
            )
            target_summary = target_result(target, measured)
        for pre in built.values():
            pre.close()
    stage_rows = []
    stage_sizes = [s for s in sizes if s in STAGE_SIZES]
    stage_batches = [b for b in batches if b in STAGE_BATCHES]
    if stage_vs_bare and stage_sizes and stage_batches:
        stage_rows = stage_vs_bare_section(
            console,
            spec,
            {f"{w}x{h}": [synthetic_image(w, h, i) for i in range(DISTINCT_IMAGES)]
             for w, h in stage_sizes},
            stage_batches,
            cores(),
            target_rounds,
            min_time_s,
        )  # fmt: skip
    report = {
        "benchmark": "preprocess",
        "spec": spec.to_dict(),
        "machine": machine_info(),
        "libraries": {
            "dali": nvidia.dali.__version__,
            "opencv": cv2.__version__,
            "opencv_threads": cv2.getNumThreads(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "backends": [asdict(c) for c in configs],
        "filters": {c.label: backend_class(c.backend).filter for c in configs},
        "min_time_s": min_time_s,
        "jpeg_reduction": reductions,
        "results": rows,
        "target": target_summary,
        "stage_vs_bare": stage_rows,
    }
    console.print(table(report, title))
    if target_summary:
        t = target_summary
        alone = {
            r["backend"]: r["images_per_s"]
            for r in rows
            if r["size"] == f"{t['size'][0]}x{t['size'][1]}" and r["batch"] == t["batch"]
        }
        if {t["faster"], t["baseline"]} <= set(alone):
            t["table_ratio"] = round(alone[t["faster"]] / alone[t["baseline"]], 2)
            console.print(
                f"target pair measured apart (the table): {alone[t['faster']]} / "
                f"{alone[t['baseline']]} img/s = {t['table_ratio']}x"
            )
        spread = Spread.from_dict(t["ratio_spread"])
        console.print(
            f"target: {t['faster']} / {t['baseline']} at {t['size'][0]}x{t['size'][1]}, batch "
            f"{t['batch']} (side by side, medians of {spread.rounds} alternating rounds): "
            f"{t['faster_images_per_s']} / {t['baseline_images_per_s']} img/s, ratio "
            f"{spread.cell()}x (target >= {t['ratio']}x: {t['verdict']['outcome']}); CPU ms/img "
            f"{t['faster_cpu_ms_per_image']} / {t['baseline_cpu_ms_per_image']}; load average "
            f"{', '.join(f'{v:.2f}' for v in t['load_average'])}",
            markup=False,
        )
        verdict = Verdict(f"target {t['faster']} / {t['baseline']}", spread, t["ratio"])
        if not verdict.decided:  # a line of its own, not a quiet pass or fail
            console.print(verdict.line(), markup=False, soft_wrap=True)
    write_report(report, "bench-preprocess", out, console=console)
    return report


def table(report: dict[str, Any], title: str) -> Table:
    """Images/s (CPU ms per image): one row per size × batch, one column per backend."""
    labels = [b["label"] for b in report["backends"]]
    machine = report["machine"]
    table = Table(
        title=f"{title}: images/s (CPU ms per image), {machine['cores']} cores, "
        f"{machine['gpu'] or machine['cpu']}"
    )
    table.add_column("size", justify="right")
    table.add_column("batch", justify="right")
    for label in labels:
        table.add_column(label, justify="right")
    cells: dict[tuple[str, int], dict[str, str]] = {}
    for row in report["results"]:
        cell = f"{row['images_per_s']:.1f} ({row['cpu_ms_per_image']:.1f})"
        cells.setdefault((row["size"], row["batch"]), {})[row["backend"]] = cell
    for (size, batch), values in cells.items():
        table.add_row(size, str(batch), *(values.get(label, "-") for label in labels))
    return table
