"""`cvserve tune`: choose a pipeline's serving settings by measurement and keep them — in the
pipeline file (``--file``) or, for a shipped pipeline, in this machine's store. A composite gets
its workers per stage across Kafka (`profiling.tune_workers`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cvserve.pipelines.app.pipeline_args import Chosen, add_pipeline_options, chosen
from cvserve.pipelines.catalog import shipped_tuned_key
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.tuned import (
    stage_settings_key,
    store_settings,
    store_stage_settings,
    write_serving,
    write_stage_settings,
)
from cvserve.profiling.tune import Goal, Space, report_tuning, tune
from cvserve.profiling.tune_workers import (
    DEFAULT_MAX_TRIALS,
    DEFAULT_MAX_WORKERS,
    report_workers_tuning,
    stage_settings,
    tune_workers,
)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _splits(text: str) -> tuple[tuple[int, int], ...]:
    pairs = []
    for item in text.split(","):
        dali, engine = item.split(":")
        pairs.append((int(dali), int(engine)))
    return tuple(pairs)


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def cmd_tune(args: argparse.Namespace) -> int:
    try:
        goal = Goal(args.goal, args.concurrency, args.p99_ms, args.rate)
    except ValueError as exc:
        raise SystemExit(f"cvserve tune: {exc}") from None
    first = chosen(args, "tune")
    if first.composite is not None:
        return _tune_composite(args, goal, first)

    def build(**settings: Any) -> PipelineSpec:
        return chosen(args, "tune", **settings).specs[0]

    duration = args.duration if args.duration is not None else 5.0
    space = Space(
        engines=tuple(args.engines.split(",")) if args.engines else None,
        thread_splits=_splits(args.splits) if args.splits else None,
        max_batch_sizes=_ints(args.batches),
        queue_delays_us=_ints(args.delays),
        instances=_ints(args.instances_to_try),
        fuse=tuple(v == "yes" for v in args.fuse_to_try.split(",")),
    )
    try:
        settings, trials = tune(build, goal, space, args.size, duration)
    except RuntimeError as exc:
        raise SystemExit(f"cvserve tune: {exc}") from None
    if args.dry_run:
        written = "not written (--dry-run)"
    elif first.file:
        write_serving(first.file, settings)
        written = f"{first.file} (serving:)"
    else:
        options = {"arch": args.arch, "num_classes": None, "device": args.device}
        path = store_settings(shipped_tuned_key(first.name, **options), settings)
        written = f"{path} (used by --pipeline {first.name} on this machine)"
    report_tuning(
        first.name,
        goal,
        settings,
        trials,
        args.size,
        duration,
        written,
        Path(args.out) if args.out else None,
    )
    return 0


def _tune_composite(args: argparse.Namespace, goal: Goal, first: Chosen) -> int:
    """Workers per stage of a composite across Kafka (`profiling.tune_workers`), kept in its
    file's ``composite:`` entries or, for a shipped one, in this machine's store."""
    duration = args.duration if args.duration is not None else 10.0
    try:
        best, trials, services = tune_workers(
            first.route,
            first.specs,
            goal,
            args.size,
            duration,
            args.max_workers,
            args.max_trials,
            first.worker_args,
            bootstrap=args.kafka,
            triton_url=args.triton_url,
        )
    except RuntimeError as exc:
        raise SystemExit(f"cvserve tune: {exc}") from None
    settings = stage_settings(best)
    if args.dry_run:
        written = "not written (--dry-run)"
    elif first.file:
        write_stage_settings(first.file, settings)
        written = f"{first.file} (composite: workers, rate)"
    else:
        path = store_stage_settings(stage_settings_key(first.name), settings)
        written = f"{path} (used by --pipeline {first.name} on this machine)"
    report_workers_tuning(
        first.name,
        goal,
        best,
        trials,
        services,
        args.size,
        duration,
        written,
        Path(args.out) if args.out else None,
    )
    return 0


def register(commands: argparse._SubParsersAction, benches: argparse._SubParsersAction) -> None:
    """Add ``tune`` to ``cvserve``."""
    tune_parser = commands.add_parser(
        "tune",
        help="choose engine, batching, instances and threads by short measured runs; write them",
    )
    add_pipeline_options(tune_parser, composites=True)
    tune_parser.add_argument("--goal", default="throughput", choices=("throughput", "latency"))
    tune_parser.add_argument(
        "--concurrency", type=int, default=8, help="throughput goal: requests in flight"
    )
    tune_parser.add_argument(
        "--p99-ms", type=float, default=None, help="throughput goal: p99 bound (ms)"
    )
    tune_parser.add_argument("--rate", type=float, default=None, help="latency goal: images/s")
    tune_parser.add_argument("--size", type=_size, default=(640, 480), help="WxH of the images")
    tune_parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per trial (default 5; 10 for a composite across Kafka)",
    )
    tune_parser.add_argument(
        "--engines", default=None, help="engines to try (default: within bound, fastest first)"
    )
    tune_parser.add_argument(
        "--splits", default=None, help="DALI:engine threads to try, e.g. 2:2,1:1 (default: derived)"
    )
    tune_parser.add_argument("--batches", default="1,4,8,16", help="max batch sizes to try")
    tune_parser.add_argument("--delays", default="0,1000,4000", help="queue delays (us) to try")
    tune_parser.add_argument("--instances-to-try", default="1,2", help="DNN instance counts to try")
    tune_parser.add_argument(
        "--fuse-to-try",
        default="no,yes",
        choices=("no,yes", "no", "yes", "yes,no"),
        help="the stages as one model (yes: one instance per core, one thread "
        "per stage) or apart (no)",
    )
    tune_parser.add_argument(
        "--max-workers",
        type=int,
        default=DEFAULT_MAX_WORKERS,
        help="a composite: most workers per stage to try",
    )
    tune_parser.add_argument(
        "--max-trials", type=int, default=DEFAULT_MAX_TRIALS, help="a composite: most trials"
    )
    tune_parser.add_argument(
        "--kafka", default=None, help="a composite: a running broker (default: one started)"
    )
    tune_parser.add_argument(
        "--triton-url",
        default=None,
        help="a composite: a Triton serving its stages (default: one started)",
    )
    tune_parser.add_argument(
        "--dry-run", action="store_true", help="print and report, write nothing"
    )
    tune_parser.add_argument("--out", default=None, help="JSON path")
    tune_parser.set_defaults(func=cmd_tune)
