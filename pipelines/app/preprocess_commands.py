"""Subcommands of the preprocessing stage: ``cvserve bench preprocess``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from cvserve.preprocess.spec import ResizeMode


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def cmd_bench_preprocess(args: argparse.Namespace) -> int:
    from cvserve.preprocess.spec import PreprocessSpec
    from cvserve.profiling.bench.preprocess import (
        BENCH_BATCHES,
        BENCH_SIZES,
        CPU_TARGET,
        TARGET_ROUNDS,
        bench_preprocess,
        cpu_configs,
    )

    configs = cpu_configs(args.threads)
    if args.backends:
        configs = [c for c in configs if c.label in args.backends or c.backend in args.backends]
    bench_preprocess(
        configs,
        sizes=args.sizes or BENCH_SIZES,
        batches=args.batches or BENCH_BATCHES,
        spec=PreprocessSpec(resize_mode=args.resize_mode),
        min_time_s=0.15 if args.quick else args.min_time,
        target=CPU_TARGET,
        target_rounds=2 if args.quick else args.rounds or TARGET_ROUNDS,
        out=Path(args.out) if args.out else None,
    )
    return 0


def register(commands: Any, benches: Any) -> None:
    """Add ``cvserve bench preprocess`` to ``benches``."""
    bench = benches.add_parser(
        "preprocess", help="preprocessing backends: images/s by size x batch (table + JSON)"
    )
    bench.add_argument(
        "--sizes", nargs="+", type=_size, help="WxH ... (default 640x480 1920x1080 3840x2160)"
    )
    bench.add_argument("--batches", nargs="+", type=int, help="batch sizes (default 1 8 32)")
    bench.add_argument("--backends", nargs="+", help="labels or backend names (default: all)")
    bench.add_argument(
        "--threads", type=int, default=None, help="threads per backend (default: cores)"
    )
    bench.add_argument("--resize-mode", default="shorter_crop", choices=get_args(ResizeMode))
    bench.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    bench.add_argument("--quick", action="store_true", help="shorter measurements (noisier)")
    bench.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="alternating rounds of the target pair, their median and spread reported",
    )
    bench.add_argument(
        "--out", default=None, help="JSON path (default runs/bench-preprocess-*.json)"
    )
    bench.set_defaults(func=cmd_bench_preprocess)
