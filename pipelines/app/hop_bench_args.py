"""The options of the broker hop benchmarks (`cvserve bench kafka`, `cvserve bench redis`),
declared once: the records of one hop (`hop_records.HopSettings`) and the pipeline run across the
broker after it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from cvserve.pipelines.catalog import COMPOSITES
from cvserve.profiling.bench.hop_records import HopSettings

# One option per `HopSettings` field (``--size-kb`` for ``size_kb``), with its help.
_HELP = {
    "size_kb": "each record's JPEG, about this many KB",
    "latency_messages": "hops measured one at a time",
    "throughput_messages": "messages sent back to back",
    "warmup_messages": "at least this many sent first (a broker's JIT), then windows until the "
    "hop p50 is steady",
    "warmup_max_messages": "the warm-up's bound when the hop never settles (= "
    "--warmup-messages: a fixed count)",
}


def add_hop_arguments(parser: argparse.ArgumentParser) -> None:
    """An option per `HopSettings` field, ``--pipeline`` (a composite or ``none``),
    ``--pipeline-duration`` and ``--out``."""
    for field in dataclasses.fields(HopSettings):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=int, default=field.default, help=_HELP[field.name])
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
            **{f.name: getattr(args, f.name) for f in dataclasses.fields(HopSettings)}
        ),
        "pipeline": None if args.pipeline == "none" else args.pipeline,
        "pipeline_duration_s": args.pipeline_duration,
        "out": Path(args.out) if args.out else None,
    }
