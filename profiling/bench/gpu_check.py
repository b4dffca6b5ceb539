"""``python -m cvserve.profiling.bench.gpu_check``: the GPU half of the preprocessing checks, in
one go.

1. Parity of the GPU paths on `preprocess.parity`'s corpus (every resize mode, colour case,
   dtype): DALI ``mixed`` vs the float64 reference and vs DALI CPU, torchvision CUDA vs the
   reference — mean < 0.02, max < 0.5 normalised units, META equal.
2. The GPU half of ``cvserve bench preprocess``: DALI GPU, torchvision CUDA, and DALI CPU /
   OpenCV on all cores as baselines, by size x batch; the target DALI GPU >= 8x OpenCV on all
   cores at 1920x1080. Then cvserve's DALI GPU stage against the same graph bare, with the
   hardware JPEG decoder on (its default share) and off (`profiling.bench.bare_dali`).
3. The detect stage's crops (`broker.crops`): nvJPEG decode + crop + encode on the GPU vs OpenCV
   — same boxes, same pixels within JPEG noise, and images/s for 8 crops of a 1920x1080 JPEG.
4. The served path: every shipped pipeline built for the GPU and for the CPU, each served on a
   local Triton, the same images sent to both, the GPU's answers compared with the CPU's
   (`profiling.bench.served_parity`: classify same top-1, identical at fp32 and ≥ 95 % at fp16;
   detect boxes at IoU ≥ 0.9; segment mask pixels ≥ 99 %; identify cosine ≥ 0.999). Served /
   limit on the GPU is ``cvserve bench efficiency --device gpu`` (its own step in
   ../shared/gpu/run.sh).

Prints tables, writes one JSON (``--out``). Exit status: 0 all parity checks passed, 1 some failed,
`EXIT_NO_GPU` (2) when no CUDA GPU is visible (nothing was checked).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cvserve.profiling.tables import field, results_table

EXIT_NO_GPU = 2
GPU_BATCHES: tuple[int, ...] = (1, 8, 32, 128)


def gpu_status() -> tuple[bool, str]:
    """Whether torch and DALI both see a CUDA GPU, and what they see."""
    import torch

    from cvserve.preprocess.dali_graph import gpu_count

    torch_gpu = torch.cuda.is_available()
    dali_gpus = gpu_count()
    name = torch.cuda.get_device_name(0) if torch_gpu else "none"
    return torch_gpu and dali_gpus > 0, f"torch sees {name}; DALI sees {dali_gpus} GPU(s)"


def parity_checks(console: Console, threads: int) -> list[dict[str, Any]]:
    """One row per spec x (backend, baseline) pair, with the failing images if any."""
    from cvserve.preprocess.backends import make_preprocessor
    from cvserve.preprocess.parity import PARITY_SPECS, failures, parity, parity_images

    images = parity_images()
    names = list(images)
    data = list(images.values())
    rows = []
    for spec_name, spec in PARITY_SPECS.items():
        gpu_spec = replace(spec, device="gpu")
        reference = make_preprocessor(spec, "reference")(data)
        dali_cpu = make_preprocessor(spec, "dali", 8, threads)(data)
        dali_gpu = make_preprocessor(gpu_spec, "dali", 8, threads)(data)
        tv_cuda = make_preprocessor(gpu_spec, "torchvision", 8)(data)
        for label, got, expected, chroma in (
            ("dali-gpu vs reference", dali_gpu, reference, False),
            ("dali-gpu vs dali-cpu", dali_gpu, dali_cpu, False),
            # Its nvJPEG decode upsamples chroma otherwise: JPEGs keep their own bound.
            ("torchvision-cuda vs reference", tv_cuda, reference, True),
        ):
            bad = failures(got, expected, names, gpu_jpeg_chroma=chroma)
            measured = [
                parity(g, e)
                for g, e in zip(got, expected, strict=True)
                if hasattr(g, "pixels") and hasattr(e, "pixels")
            ]
            rows.append(
                {
                    "spec": spec_name,
                    "check": label,
                    "images": len(names),
                    "worst_mean": max((p.mean for p in measured), default=float("nan")),
                    "worst_max": max((p.max for p in measured), default=float("nan")),
                    "ok": not bad,
                    "failures": bad,
                }
            )
            console.print(f"  {spec_name}: {label}: {'ok' if not bad else 'FAILED'}")
    return rows


def parity_table(rows: list[dict[str, Any]]) -> Table:
    return results_table(
        "GPU parity (normalised units; contract: mean < 0.02, max < 0.5)",
        {
            "spec": field("spec"),
            "check": field("check"),
            "images": field("images"),
            "worst mean": field("worst_mean", ".4f"),
            "worst max": field("worst_max", ".3f"),
            "result": lambda row: "ok" if row["ok"] else f"FAILED ({len(row['failures'])})",
        },
        rows,
    )


CROP_IMAGE_SIZE = (1920, 1080)
CROP_BOXES = 8


def crop_check(min_time_s: float) -> dict[str, Any]:
    """nvjpeg vs opencv crops of one synthetic 1080p JPEG: parity and images/s per backend; and
    the mean |Δ| per crop parity case (`broker.crop_parity`)."""
    import cv2
    import numpy as np

    from cvserve.broker.crop_parity import CROP_PARITY_BOUND, CROP_PARITY_CASES
    from cvserve.broker.crops import cut_crops
    from cvserve.preprocess.synthetic import synthetic_image

    width, height = CROP_IMAGE_SIZE
    image = synthetic_image(width, height, seed=11)
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 0.7, (CROP_BOXES, 2)) * (width, height)
    sizes = rng.uniform(0.05, 0.3, (CROP_BOXES, 2)) * (width, height)
    boxes = np.concatenate([corners, corners + sizes], axis=1).astype(np.float32)
    scores = np.linspace(0.9, 0.6, CROP_BOXES, dtype=np.float32)

    def cut(backend: str) -> list[Any]:
        return cut_crops(image, boxes, scores, 0.5, CROP_BOXES, backend=backend)

    want, got = cut("opencv"), cut("nvjpeg")
    diffs = []
    for a, b in zip(got, want, strict=True):
        pa, pb = (cv2.imdecode(np.frombuffer(c.jpeg, np.uint8), cv2.IMREAD_COLOR) for c in (a, b))
        diffs.append(float(np.abs(pa.astype(int) - pb.astype(int)).mean()))
    row: dict[str, Any] = {
        "same_boxes": [c.crop for c in got] == [c.crop for c in want],
        "max_mean_abs_diff": max(diffs),
        # Per colour case (EXIF-rotated JPEG, PNG, WebP; grey): where encoders part ways.
        "cases": {case: _case_diffs(case) for case in CROP_PARITY_CASES},
    }
    row["ok"] = (
        row["same_boxes"]
        and row["max_mean_abs_diff"] < CROP_PARITY_BOUND
        and all(
            c["max"] is not None and c["max"] < CROP_PARITY_BOUND for c in row["cases"].values()
        )
    )
    for backend in ("opencv", "nvjpeg"):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_time_s or count < 3:
            cut(backend)
            count += 1
        row[f"{backend}_images_per_s"] = round(count / (time.perf_counter() - start), 1)
    row["speedup"] = round(row["nvjpeg_images_per_s"] / row["opencv_images_per_s"], 2)
    return row


def _within(value: float | None, bound: float) -> bool:
    return value is not None and value < bound


def _case_diffs(case: str) -> dict[str, Any]:
    """nvjpeg's crops of crop parity case ``case`` against OpenCV's: mean |Δ| per crop and the
    largest (None, with the reason, when the two cut different boxes)."""
    from cvserve.broker.crop_parity import mean_abs_diffs

    try:
        diffs = mean_abs_diffs(case, "nvjpeg")
    except ValueError as exc:
        return {"mean_abs_diffs": [], "max": None, "error": str(exc)}
    return {"mean_abs_diffs": [round(d, 3) for d in diffs], "max": round(max(diffs), 3)}


SERVED_PIPELINES: tuple[str, ...] = ("classify", "detect", "segment", "depth", "identify")
SERVED_IMAGES = 8


def served_checks(console: Console, pipelines: Sequence[str]) -> list[dict[str, Any]]:
    """The pipelines served by one Triton on the CPU (torch fp32: the reference), one on the GPU
    (torch fp32) and one on the GPU at fp16 (classify): one row per pipeline and comparison
    with the CPU's answers. Engines are named, so no stage measures engines while loading."""
    from cvserve.pipelines.catalog import pipeline_specs
    from cvserve.preprocess.synthetic import synthetic_image
    from cvserve.profiling.bench.served_parity import served_parity

    images = [synthetic_image(640, 480, seed) for seed in range(SERVED_IMAGES)]

    def built(device: str, precision: str = "fp32") -> list[Any]:
        names = pipelines if precision == "fp32" else [p for p in pipelines if p == "classify"]
        options = {"device": device, "engine": "torch", "precision": precision}
        return [pipeline_specs(name, **options)[0] for name in names]

    servers = {"cpu": built("cpu"), "gpu fp32": built("gpu"), "gpu fp16": built("gpu", "fp16")}
    try:
        compared = served_parity({k: v for k, v in servers.items() if v}, images)
    except Exception as exc:  # a pipeline that does not serve is this check's finding
        console.print(f"  served: FAILED: {exc}")
        failed = {"pipeline": ",".join(pipelines), "check": "served", "ok": False}
        return [{**failed, "error": str(exc)}]
    rows = []
    for name, results in compared.items():
        for label, result in results.items():
            rows.append({"pipeline": name, "check": label, **result})
            console.print(f"  {name} {label}: {result}")
    return rows


STAGE_BATCHES: tuple[int, ...] = (32, 128)


def gpu_stage_vs_bare(console: Console, threads: int, min_time_s: float) -> list[dict[str, Any]]:
    """cvserve's DALI GPU stage against the same graph bare (`profiling.bench.bare_dali`), with
    the hardware JPEG decoder taking its default share and off."""
    from cvserve.preprocess.dali_graph import HW_DECODER_LOAD
    from cvserve.preprocess.spec import PreprocessSpec
    from cvserve.preprocess.synthetic import synthetic_image
    from cvserve.profiling.bench.bare_dali import stage_vs_bare_section
    from cvserve.profiling.bench.preprocess import DISTINCT_IMAGES, STAGE_SIZES

    images = {
        f"{w}x{h}": [synthetic_image(w, h, i) for i in range(DISTINCT_IMAGES)]
        for w, h in STAGE_SIZES
    }
    return stage_vs_bare_section(
        console, PreprocessSpec(), images, STAGE_BATCHES, threads, 3, min_time_s, "gpu",
        hw_decoder_loads=(HW_DECODER_LOAD, 0.0),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cvserve.profiling.bench.gpu_check", description=__doc__
    )
    parser.add_argument("--batches", nargs="+", type=int, default=list(GPU_BATCHES))
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--skip-bench", action="store_true", help="parity checks only")
    parser.add_argument(
        "--served",
        default=",".join(SERVED_PIPELINES),
        help="pipelines to serve on the GPU and compare with the CPU ('' for none)",
    )
    parser.add_argument("--out", default=None, help="JSON path (default runs/gpu-check-*.json)")
    args = parser.parse_args(argv)
    ok, seen = gpu_status()
    if not ok:
        print(f"gpu_check: no CUDA GPU usable ({seen}); nothing checked.")
        return EXIT_NO_GPU

    from cvserve.profiling.bench.preprocess import (
        BackendConfig,
        Target,
        bench_preprocess,
        cores,
        wide_console,
    )

    console = wide_console()
    n = cores()
    console.print(f"gpu_check on {seen}, {n} cores")
    rows = parity_checks(console, n)
    console.print(parity_table(rows))
    for row in rows:
        for line in row["failures"]:
            console.print(f"  {row['spec']} {row['check']}: {line}")
    report: dict[str, Any] = {"check": "gpu", "gpu": seen, "parity": rows}
    crops = crop_check(args.min_time)
    report["crops"] = crops
    console.print(
        f"crops, {CROP_BOXES} of a {CROP_IMAGE_SIZE[0]}x{CROP_IMAGE_SIZE[1]} JPEG: {crops}"
    )
    served = served_checks(console, [p for p in args.served.split(",") if p])
    report["served"] = served
    if not args.skip_bench:
        configs = [
            BackendConfig("dali-gpu", "dali", n, "gpu"),
            BackendConfig("torchvision-cuda", "torchvision", 1, "gpu"),
            BackendConfig("dali-cpu", "dali", n),
            BackendConfig(f"opencv-{n}t", "opencv", n),
        ]
        target = Target("dali-gpu", f"opencv-{n}t", (1920, 1080), max(args.batches), 8.0)
        report["bench"] = bench_preprocess(
            configs,
            batches=args.batches,
            min_time_s=args.min_time,
            target=target,
            out=Path(args.out).with_suffix(".bench.json") if args.out else None,
            title="cvserve gpu_check bench",
            console=console,
            stage_vs_bare=False,
        )
        report["stage_vs_bare"] = gpu_stage_vs_bare(console, n, args.min_time)
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    console.print(f"wrote {out}")
    checks = [*rows, *served, crops]
    return 0 if all(row["ok"] for row in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
