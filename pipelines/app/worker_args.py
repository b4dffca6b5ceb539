"""The options of every ``worker`` subcommand, whatever its broker (``cvserve worker`` in
`kafka_commands`, ``cvserve redis worker`` in `redis_commands`): the stage, Triton, the metrics
endpoint, batching and calls, stats, crops and logging. Each command adds its broker's own."""

from __future__ import annotations

import argparse

from cvserve.broker.worker_config import WorkerConfig
from cvserve.broker.worker_metrics import DEFAULT_ADDRESS as DEFAULT_METRICS_ADDRESS
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
