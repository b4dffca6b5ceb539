"""The Redis Streams subcommands of ``cvserve`` (the broker comparison; Kafka stays the default):
``redis start|worker|submit|results`` and ``bench redis``.

The server's address comes from ``--redis-url``, else ``$CVSERVE_REDIS_URL``, else
``redis://127.0.0.1:6379``. Streams and groups are named like the Kafka topics and groups
(``--namespace``, ``$CVSERVE_KAFKA_NAMESPACE``), entries hold the same schema-v1 records
(`broker.redis_streams`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cvserve.broker.redis_worker import DEFAULT_CLAIM_IDLE_MS
from cvserve.broker.routes import Route
from cvserve.broker.worker_config import WorkerConfig
from cvserve.pipelines.app.hop_bench_args import add_hop_arguments, hop_bench_options
from cvserve.pipelines.app.kafka_commands import expand_paths, print_results, reading_options
from cvserve.pipelines.app.run_command import run_command, stop_event
from cvserve.pipelines.app.worker_args import add_worker_options, run_worker

REDIS_URL_ENV = "CVSERVE_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"


def redis_url(args: argparse.Namespace) -> str:
    """``--redis-url``, else ``$CVSERVE_REDIS_URL``, else the default local server."""
    return str(
        getattr(args, "redis_url", None) or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    )


def _route(args: argparse.Namespace, command: str) -> Route:
    from cvserve.pipelines.app.pipeline_args import pipeline_route

    return pipeline_route(args, command)


def cmd_redis_start(args: argparse.Namespace) -> int:
    from cvserve.deploy.redis import RedisServer, RedisStartError

    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="cvserve-redis-"))
    server = RedisServer(state_dir, port=args.port)
    try:
        server.start(timeout_s=args.timeout)
    except RedisStartError as exc:
        print(f"cvserve redis start: {exc}", file=sys.stderr)
        return 1
    print(f"Redis ready: {server.url} (no persistence), log {server.log_path}; Ctrl-C stops it")
    stop = stop_event()
    while not stop.wait(1.0):
        if not server.running():
            print(f"redis-server exited; log {server.log_path}", file=sys.stderr)
            return 1
    server.stop()
    return 0


def cmd_redis_worker(args: argparse.Namespace) -> int:
    from cvserve.broker.redis_worker import RedisStageWorker
    from cvserve.broker.stats import default_stats_dir

    route, url = _route(args, "redis worker"), redis_url(args)

    def start(stage: str, config: WorkerConfig, options: Any) -> RedisStageWorker:
        claim_idle_ms = args.claim_idle_ms
        return RedisStageWorker(
            url, route, stage, args.triton_url, config, claim_idle_ms, **options
        )

    # Beside the Kafka workers' folder, not in it: `cvserve kafka lag` lists that one.
    stats_dir = default_stats_dir().with_name("redis-workers")
    return run_worker(args, "redis worker", route, stats_dir, start)


def cmd_redis_submit(args: argparse.Namespace) -> int:
    from cvserve.broker.producer import MessageTooLarge
    from cvserve.broker.redis_streams import RedisImageProducer
    from cvserve.preprocess.spec import PreprocessError

    paths = expand_paths(args.paths)
    if not paths:
        raise SystemExit("cvserve redis submit: no files to send")
    failures = 0
    with RedisImageProducer(
        redis_url(args), _route(args, "redis submit"), args.namespace
    ) as producer:
        for path in paths:
            try:
                request_id, _ = producer.send(
                    path.read_bytes(), key=args.key or "", validate=not args.no_validate
                )
            except (PreprocessError, MessageTooLarge, OSError) as exc:
                print(f"{path}: {exc}", file=sys.stderr)
                failures += 1
                continue
            print(f"{request_id}\t{path}")
    print(
        f"submitted {len(paths) - failures} of {len(paths)} image(s) to {producer.stream}",
        file=sys.stderr,
    )
    return 1 if failures else 0


def cmd_redis_results(args: argparse.Namespace) -> int:
    from cvserve.broker.redis_results import RedisResultReader

    route, options = _route(args, "redis results"), reading_options(args, "redis results")
    reader = RedisResultReader(redis_url(args), route, args.namespace, **options)
    print_results(reader, args, "redis results", "entr(ies)")
    return 0


def cmd_bench_redis(args: argparse.Namespace) -> int:
    from cvserve.deploy.redis import RedisStartError
    from cvserve.profiling.bench.redis_hop import bench_redis

    try:
        bench_redis(redis_url=args.redis_url, **hop_bench_options(args))
    except RedisStartError as exc:
        raise SystemExit(f"cvserve bench redis: {exc}") from None
    return 0


# --- wiring ------------------------------------------------------------------------------------


def _add_stream_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url", default=None, help=f"default ${REDIS_URL_ENV} or {DEFAULT_REDIS_URL}"
    )
    parser.add_argument(
        "--namespace",
        default=None,
        help="stream prefix (default $CVSERVE_KAFKA_NAMESPACE or cvserve)",
    )
    parser.add_argument("--pipeline", default="classify")
    parser.add_argument(
        "--file", default=None, metavar="F", help="a pipeline file (its name and route)"
    )


def add_subcommands(sub: Any) -> None:
    """``start``, ``worker``, ``submit``, ``results`` as subcommands of ``sub``."""
    start = sub.add_parser("start", help="a local redis-server in the foreground (no persistence)")
    start.add_argument("--port", type=int, default=None, help="default: a free one")
    start.add_argument("--state-dir", default=None, help="its log (default: a temporary folder)")
    start.add_argument("--timeout", type=float, default=30.0, help="seconds to get ready")
    start.set_defaults(func=cmd_redis_start)

    worker = sub.add_parser("worker", help="one stage worker over Redis Streams")
    _add_stream_options(worker)
    add_worker_options(worker, "JSON counters")
    worker.add_argument(
        "--claim-idle-ms",
        type=int,
        default=DEFAULT_CLAIM_IDLE_MS,
        help="take over entries another worker held unacknowledged this long (it died)",
    )
    worker.set_defaults(func=_one_line(cmd_redis_worker))

    submit = sub.add_parser("submit", help="send images to a pipeline's first stream")
    submit.add_argument("paths", nargs="+", help="files, folders (recursive) or globs")
    _add_stream_options(submit)
    submit.add_argument("--key", default=None, help="entry key (default: the request id)")
    submit.add_argument("--no-validate", action="store_true", help="send what sniff refuses")
    submit.set_defaults(func=_one_line(cmd_redis_submit))

    results = sub.add_parser("results", help="print a pipeline's results, each once")
    _add_stream_options(results)
    results.add_argument("--follow", action="store_true", help="keep reading until Ctrl-C")
    results.add_argument("--from-end", action="store_true", help="only results from now on")
    results.add_argument("--idle-timeout", type=float, default=3.0)
    results.set_defaults(func=_one_line(cmd_redis_results))


def _one_line(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` with redis-py's connection errors (not the builtin `ConnectionError`) raised
    as the builtin, which every ``cvserve`` entry point prints as one line."""

    def run(args: argparse.Namespace) -> int:
        from redis import ConnectionError as RedisConnectionError

        try:
            return command(args)
        except RedisConnectionError as exc:
            raise ConnectionError(f"Redis at {redis_url(args)}: {exc}") from exc

    return run


def register(commands: Any, benches: Any) -> None:
    """Add ``cvserve redis ...`` and ``cvserve bench redis``."""
    redis = commands.add_parser("redis", help="Redis Streams as the broker (comparison)")
    add_subcommands(redis.add_subparsers(dest="redis_command", required=True))

    bench = benches.add_parser(
        "redis", help="one Redis Streams hop; detect_identify over Redis Streams"
    )
    bench.add_argument("--redis-url", default=None, help="default: a temporary local server")
    add_hop_arguments(bench)
    bench.set_defaults(func=cmd_bench_redis)


def main(argv: list[str] | None = None) -> int:
    """These subcommands alone (``python -m cvserve.pipelines.app.redis_commands worker ...``),
    without the rest of ``cvserve``'s parser."""
    parser = argparse.ArgumentParser(prog="cvserve redis", description=__doc__)
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(args, "cvserve redis")


if __name__ == "__main__":
    sys.exit(main())
