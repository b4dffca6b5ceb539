"""The options of the broker hop benchmarks (`cvserve bench kafka`, `cvserve bench redis`),
declared once: the records of one hop (`hop_records.HopSettings`) and the pipeline run across the
broker after it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cvserve.pipelines.catalog import COMPOSITES
from cvserve.profiling.bench.hop_records import DEFAULT_HOP, HopSettings


def add_hop_arguments(parser: argparse.ArgumentParser) -> None:
    """``--size-kb``, the message counts, the warm-up and its bound, ``--pipeline`` (a composite
    or ``none``), ``--pipeline-duration`` and ``--out``."""
    parser.add_argument("--size-kb", type=int, default=DEFAULT_HOP.size_kb)
    parser.add_argument(
        "--latency-messages",
        type=int,
        default=DEFAULT_HOP.latency_messages,
        help="hops measured one at a time",
    )
    parser.add_argument(
        "--throughput-messages",
        type=int,
        default=DEFAULT_HOP.throughput_messages,
        help="messages sent back to back",
    )
    parser.add_argument(
        "--warmup-messages",
        type=int,
        default=DEFAULT_HOP.warmup_messages,
        help="at least this many sent first (a broker's JIT), then windows until the hop p50 "
        "is steady",
    )
    parser.add_argument(
        "--warmup-max-messages",
        type=int,
        default=DEFAULT_HOP.warmup_max_messages,
        help="the warm-up's bound when the hop never settles (= --warmup-messages: a fixed count)",
    )
    parser.add_argument(
        "--pipeline",
        default="detect_identify",
        choices=[*COMPOSITES, "none"],
        help="then this pipeline across the same broker, 1 vs 2 workers per stage (none: the "
        "hop only)",
    )
    parser.add_argument(
        "--pipeline-duration", type=float, default=15.0, help="seconds per worker count"
    )
    parser.add_argument("--out", default=None, help="JSON path")


def hop_bench_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of `bench.kafka.bench_kafka` and `bench.redis_hop.bench_redis` that the
    options of `add_hop_arguments` give."""
    return {
        "hop": HopSettings(
            args.size_kb,
            args.latency_messages,
            args.throughput_messages,
            args.warmup_messages,
            args.warmup_max_messages,
        ),
        "pipeline": None if args.pipeline == "none" else args.pipeline,
        "pipeline_duration_s": args.pipeline_duration,
        "out": Path(args.out) if args.out else None,
    }
