"""`cvserve bench preprocess`: images/s of every preprocessing backend by image size × batch.

All backends run the same `PreprocessSpec` on the same generated JPEGs, one after the other in
this process. The issue's target pair (DALI CPU vs the OpenCV single-thread loop, batch 32,
1920x1080) is measured again side by side, alternating, for the ratio. ``dali-cpu-steps`` is DALI
timed step by step (what ``PREPROCESS_TIMES`` costs); ``opencv-reduced-*`` decode JPEGs at a
reduced scale where the contract allows (the factor per size is in the report).
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
from cvserve.profiling.machine import machine_info, write_report

BENCH_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080), (3840, 2160))
BENCH_BATCHES: tuple[int, ...] = (1, 8, 32)
DISTINCT_IMAGES = 4  # different JPEGs per size, cycled to fill a batch


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
    a: Preprocessor, b: Preprocessor, batch: Sequence[bytes], rounds: int, gpu: bool
) -> tuple[Rate, Rate]:
    """`Rate` of ``a`` and ``b`` on ``batch``, alternating ``rounds`` times (load on a shared
    machine then hits both alike)."""
    spent = [0.0, 0.0]
    cpu = [0.0, 0.0]
    for _ in range(rounds):
        for i, pre in enumerate((a, b)):
            start, cpu_start = time.perf_counter(), time.process_time()
            run_checked(pre, batch, gpu)
            spent[i] += time.perf_counter() - start
            cpu[i] += time.process_time() - cpu_start
    n = rounds * len(batch)
    return Rate(n / spent[0], cpu[0] * 1000 / n), Rate(n / spent[1], cpu[1] * 1000 / n)


def bench_preprocess(
    configs: Sequence[BackendConfig] | None = None,
    sizes: Sequence[tuple[int, int]] = BENCH_SIZES,
    batches: Sequence[int] = BENCH_BATCHES,
    spec: PreprocessSpec | None = None,
    min_time_s: float = 0.5,
    target: Target | None = CPU_TARGET,
    target_rounds: int = 3,
    out: Path | None = None,
    title: str = "cvserve bench preprocess",
    console: Console | None = None,
) -> dict[str, Any]:
    """Measure, print the table and the target ratio, write JSON (``out`` or
    ``runs/bench-preprocess-<time>.json``); returns the report."""
    console = console or wide_console()
    configs = list(configs or cpu_configs())
    spec = spec or PreprocessSpec()
    torch.set_num_threads(1)  # one intra-op thread per worker: erratic otherwise on few cores
    rows: list[dict[str, Any]] = []
    reductions: dict[str, int] = {}
    target_result: dict[str, Any] | None = None
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
            fast, base = side_by_side(
                built[target.faster], built[target.baseline], batch, target_rounds, gpu
            )
            ratio = fast.images_per_s / base.images_per_s
            target_result = {
                **asdict(target),
                "faster_images_per_s": round(fast.images_per_s, 1),
                "baseline_images_per_s": round(base.images_per_s, 1),
                "faster_cpu_ms_per_image": round(fast.cpu_ms_per_image, 2),
                "baseline_cpu_ms_per_image": round(base.cpu_ms_per_image, 2),
                "measured_ratio": round(ratio, 2),
                "met": ratio >= target.ratio,
                "load_average": os.getloadavg(),
            }
        for pre in built.values():
            pre.close()
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
        "target": target_result,
    }
    console.print(table(report, title))
    if target_result:
        t = target_result
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
        console.print(
            f"target: {t['faster']} / {t['baseline']} at {t['size'][0]}x{t['size'][1]}, batch "
            f"{t['batch']} (side by side, {target_rounds} rounds): {t['faster_images_per_s']} / "
            f"{t['baseline_images_per_s']} img/s = {t['measured_ratio']}x "
            f"(target >= {t['ratio']}x: {'met' if t['met'] else 'NOT met'}); CPU ms/img "
            f"{t['faster_cpu_ms_per_image']} / {t['baseline_cpu_ms_per_image']}; load average "
            f"{', '.join(f'{v:.2f}' for v in t['load_average'])}"
        )
    out = write_report(report, "bench-preprocess", out)
    console.print(f"wrote {out}")
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
