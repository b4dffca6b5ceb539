"""The options of every ``worker`` subcommand, whatever its broker (``cvserve worker`` in
`kafka_commands`, ``cvserve redis worker`` in `redis_commands`): the stage, Triton, the metrics
endpoint, batching and calls, stats, crops and logging. Each command adds its broker's own, and
runs its worker through `run_worker`."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cvserve.broker.routes import Route
from cvserve.broker.stage_loop import LoopOptions, StageLoop
from cvserve.broker.worker_config import WorkerConfig
from cvserve.broker.worker_metrics import DEFAULT_ADDRESS as DEFAULT_METRICS_ADDRESS
from cvserve.pipelines.app.run_command import stop_event
from cvserve.pipelines.app.triton_tls_args import add_triton_tls_options

WORKER_DEFAULTS = WorkerConfig()


def add_worker_options(parser: argparse.ArgumentParser, stats_file_help: str) -> None:
    """``--stage`` … ``--log-level`` on ``parser``; ``stats_file_help`` says where the stats
    file goes without ``--stats-file`` (each broker's workers have their own folder)."""
    from cvserve.broker.crops import CROP_BACKENDS

    parser.add_argument("--stage", default=None, help="broker stage (default: the first)")
    parser.add_argument("--triton-url", default="127.0.0.1:8001", help="Triton gRPC host:port")
    parser.add_argument(
        "--metrics-address",
        default=DEFAULT_METRICS_ADDRESS,
        metavar="HOST:PORT",
        help="serve /metrics, /healthz, /livez here (default 127.0.0.1, a free port: see the "
        "stats file or the log; 0.0.0.0:9464 in a pod; 'off': none)",
    )
    add_triton_tls_options(parser)
    defaults = WORKER_DEFAULTS
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="records per poll"
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=defaults.max_in_flight, help="Triton requests at once"
    )
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=defaults.call_timeout_s,
        help="seconds one Triton call may take",
    )
    parser.add_argument("--stats-file", default=None, help=stats_file_help)
    parser.add_argument(
        "--crop-backend",
        default=None,
        choices=["auto", *CROP_BACKENDS],
        help="a fan-out stage's crops (default $CVSERVE_CROP_BACKEND, else auto: nvjpeg on CUDA)",
    )
    parser.add_argument("--log-level", default="INFO")


def run_worker(
    args: argparse.Namespace,
    command: str,
    route: Route,
    stats_dir: Path,
    start: Callable[[str, WorkerConfig, LoopOptions], StageLoop],
    **config: Any,
) -> int:
    """Run one worker of ``route`` (``--stage``, else its first) until SIGTERM or Ctrl-C, whatever
    its broker: ``start(stage, config, options)`` makes it (``config``: the common options and the
    broker's own ``config`` fields). Its stats file defaults to ``stats_dir``; a final line logs
    its counters."""
    from cvserve.broker.crops import CROP_BACKEND_ENV, CROP_BACKENDS

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.crop_backend:
        os.environ[CROP_BACKEND_ENV] = args.crop_backend
    crop_backend = os.environ.get(CROP_BACKEND_ENV, "auto")
    if crop_backend not in ("auto", *CROP_BACKENDS):  # else every crop would be dead-lettered
        raise SystemExit(
            f"cvserve {command}: {CROP_BACKEND_ENV}={crop_backend!r}: choose auto or one of "
            f"{list(CROP_BACKENDS)}"
        )
    stage = args.stage or route.first.name
    worker_config = WorkerConfig(
        batch_size=args.batch_size,
        max_in_flight=args.max_in_flight,
        call_timeout_s=args.call_timeout,
        **config,
    )
    options = LoopOptions(
        namespace=args.namespace,
        stats_path=Path(args.stats_file)
        if args.stats_file
        else stats_dir / f"{route.pipeline}.{stage}.{os.getpid()}.json",
        metrics_address=None if args.metrics_address == "off" else args.metrics_address,
    )
    stop = stop_event()
    stats = start(stage, worker_config, options).run(stop)
    logging.getLogger(__name__).info(
        "worker %s stopped: consumed %d, claimed %d, results %d, forwarded %d, dead letters %d, "
        "retries %d",
        stats.pid,
        stats.consumed,
        stats.claimed,
        stats.results,
        stats.forwarded,
        stats.dead_lettered,
        stats.retries,
    )
    return 0
