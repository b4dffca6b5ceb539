"""The Kafka subcommands of ``cvserve``: ``kafka start|stop|status|lag|topics``, ``submit``,
``worker`` and ``results`` (``cvserve bench kafka`` lives in `pipelines.app.profile_commands`).

The broker's address comes from ``--bootstrap``, else ``$CVSERVE_KAFKA_BOOTSTRAP``, else the
cluster that ``cvserve kafka start`` runs (its ``cluster.json`` in the state directory). Security
settings come from ``--client-config`` (which sets ``$CVSERVE_KAFKA_CLIENT_CONFIG`` for the
processes a command starts), the variables of `deploy.kafka_client_config`, else, for the local
cluster, the client file ``cvserve kafka start --secure`` wrote. Every command checks the
connection first and stops with one line naming what to fix when the broker refuses it.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from cvserve.broker.worker_config import WorkerConfig
from cvserve.deploy.kafka import DEFAULT_HEAP_MB, DEFAULT_PARTITIONS
from cvserve.pipelines.app.run_command import run_command, stop_event
from cvserve.pipelines.app.worker_args import WORKER_DEFAULTS, add_worker_options, run_worker

BOOTSTRAP_ENV = "CVSERVE_KAFKA_BOOTSTRAP"
# Where `deploy.kafka.kafka_home` puts broker state and worker stats, in words.
KAFKA_HOME_HELP = "$CVSERVE_KAFKA_HOME (else .venv/share/cvserve/kafka)"
_GLOB_CHARS = set("*?[")


def bootstrap_address(args: argparse.Namespace, check: bool = True) -> str:
    """``--bootstrap``, ``$CVSERVE_KAFKA_BOOTSTRAP``, or the running local cluster's addresses;
    with ``check``, the cluster answered cvserve's client (else one-line `SystemExit`)."""
    from cvserve.broker.clients import check_connection
    from cvserve.deploy.kafka import default_state_dir
    from cvserve.deploy.kafka_client_config import CLIENT_CONFIG_ENV
    from cvserve.deploy.kafka_cluster import node_pids, read_cluster

    if getattr(args, "client_config", None):
        os.environ[CLIENT_CONFIG_ENV] = str(Path(args.client_config).resolve())
    if getattr(args, "bootstrap", None):
        bootstrap = str(args.bootstrap)
    elif os.environ.get(BOOTSTRAP_ENV):
        bootstrap = os.environ[BOOTSTRAP_ENV]
    else:
        state_dir = default_state_dir()
        cluster = read_cluster(state_dir)
        if not cluster or not any(node_pids(state_dir).values()):
            raise SystemExit(
                f"no Kafka broker: start one with 'cvserve kafka start', or pass --bootstrap / "
                f"set {BOOTSTRAP_ENV}"
            )
        bootstrap = str(cluster["bootstrap"])
        if cluster.get("client_config") and not os.environ.get(CLIENT_CONFIG_ENV):
            os.environ[CLIENT_CONFIG_ENV] = str(cluster["client_config"])  # workers inherit it
    if check:
        check_connection(bootstrap, timeout_s=30.0)
    return bootstrap


def _state_dir(args: argparse.Namespace) -> Path:
    from cvserve.deploy.kafka import default_state_dir

    return Path(args.state_dir) if args.state_dir else default_state_dir()


# --- cvserve kafka ... -------------------------------------------------------------------------


def cmd_kafka_start(args: argparse.Namespace) -> int:
    from cvserve.deploy.kafka import KafkaStartError
    from cvserve.deploy.kafka_client_config import CLIENT_CONFIG_ENV
    from cvserve.deploy.kafka_cluster import KafkaCluster, node_pids, read_cluster

    state_dir = _state_dir(args)
    running = {node: pid for node, pid in node_pids(state_dir).items() if pid is not None}
    if running:
        state = read_cluster(state_dir) or {}
        print(
            f"Kafka already running: {len(running)} of {state.get('brokers')} broker(s), "
            f"pid(s) {' '.join(map(str, running.values()))}, bootstrap {state.get('bootstrap')}"
        )
        return 0
    try:
        cluster = KafkaCluster(
            state_dir,
            brokers=args.brokers,
            heap_mb=args.heap_mb,
            port=args.port,
            secure=args.secure or args.mtls,
            mutual_tls=args.mtls,
        )
        cluster.start(timeout_s=args.timeout)
    except KafkaStartError as exc:
        print(f"cvserve kafka start: {exc}", file=sys.stderr)
        return 1
    pids = " ".join(str(node.process.pid) for node in cluster.nodes)  # type: ignore[union-attr]
    replicas = cluster.nodes[0].properties()
    print(
        f"Kafka ready: {cluster.brokers} broker(s), bootstrap {cluster.bootstrap}, pid(s) {pids}\n"
        f"topics: replication factor {replicas['default.replication.factor']}, "
        f"min.insync.replicas {replicas['min.insync.replicas']}; state {state_dir}"
    )
    if cluster.client_config_path:
        auth = "SASL/SCRAM-SHA-512 over TLS" + (" with client certificates" if args.mtls else "")
        print(
            f"clients need {auth}: cvserve's commands here use {cluster.client_config_path}; "
            f"elsewhere export {CLIENT_CONFIG_ENV}={cluster.client_config_path}"
        )
    if not args.foreground:
        return 0  # the JVMs run on in their own sessions; 'cvserve kafka stop' ends them
    print("running in the foreground; Ctrl-C stops it", flush=True)
    stop = stop_event()
    while not stop.wait(1.0):
        for node in cluster.nodes:
            if not node.is_running():
                print(f"Kafka node {node.node_id} exited; log {node.log_path}", file=sys.stderr)
                cluster.stop()
                return 1
    cluster.stop()
    return 0


def cmd_kafka_stop(args: argparse.Namespace) -> int:
    from cvserve.deploy.kafka_cluster import stop_cluster

    state_dir = _state_dir(args)
    stopped = stop_cluster(state_dir, timeout_s=args.timeout)
    if stopped:
        print(f"stopped {stopped} Kafka broker(s) of {state_dir}")
    else:
        print(f"no Kafka broker running for {state_dir}")
    return 0


def cmd_kafka_status(args: argparse.Namespace) -> int:
    """Exit 0 when every node runs and answers, 1 otherwise (a line per node says which)."""
    from cvserve.deploy.kafka import KafkaBroker, metadata_answered
    from cvserve.deploy.kafka_client_config import read_properties
    from cvserve.deploy.kafka_cluster import node_pids, read_cluster

    state_dir = _state_dir(args)
    cluster = read_cluster(state_dir)
    pids = node_pids(state_dir)
    if cluster is None or not any(pids.values()):
        print(f"not running (state {state_dir})")
        return 1
    client = read_properties(Path(cluster["client_config"])) if cluster["client_config"] else {}
    healthy = 0
    for node, pid in pids.items():
        state = KafkaBroker.read_state(node) or {}
        bootstrap = str(state.get("bootstrap"))
        if pid is None:
            print(f"stopped: {bootstrap} (state {node})")
            continue
        ready = metadata_answered(bootstrap, client_config=client)
        healthy += ready
        print(f"{'ready' if ready else 'NOT answering'}: pid {pid}, bootstrap {bootstrap}, "
              f"log {state.get('log')}")  # fmt: skip
    print(f"{healthy} of {cluster['brokers']} broker(s) ready; bootstrap {cluster['bootstrap']}")
    return 0 if healthy == int(cluster["brokers"]) else 1


def cmd_kafka_topics(args: argparse.Namespace) -> int:
    from cvserve.broker.topics import Topics, default_namespace, ensure_topics

    topics = Topics(args.pipeline, args.namespace or default_namespace())
    names = topics.all(args.route.stage_names)
    created = set(ensure_topics(bootstrap_address(args), names, partitions=args.partitions))
    for name in names:
        print(f"{name}{'  (created)' if name in created else ''}")
    return 0


def cmd_kafka_lag(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cvserve.broker.lag import live_workers, pipeline_lag
    from cvserve.broker.stats import default_stats_dir

    console = Console()
    rows = pipeline_lag(bootstrap_address(args), args.route, args.namespace)
    workers = [
        w
        for w in live_workers(Path(args.stats_dir or default_stats_dir()))
        if w.pipeline == args.pipeline
    ]
    if args.format == "prometheus":
        from cvserve.broker.metrics import prometheus_text

        sys.stdout.write(prometheus_text(args.pipeline, rows, workers))
        return 0
    table = Table(title=f"{args.pipeline}: consumer lag per partition")
    for column in ("stage", "group", "partition", "committed", "end", "lag"):
        table.add_column(column, justify="right" if column != "group" else "left")
    for row in rows:
        committed = "-" if row.committed is None else str(row.committed)
        table.add_row(
            row.stage, row.group, str(row.partition), committed, str(row.end), str(row.lag)
        )
    console.print(table)
    if workers:
        table = Table(title="live workers")
        columns = ("pid", "stage", "state", "in-flight", "consumed", "results", "fwd", "dead",
                   "retries")  # fmt: skip
        for column in columns:
            table.add_column(column, justify="right")
        for w in workers:
            values = (w.pid, w.stage, w.state, w.in_flight, w.consumed, w.results, w.forwarded,
                      w.dead_lettered, w.retries)  # fmt: skip
            table.add_row(*(str(v) for v in values))
        console.print(table)
    total = sum(row.lag for row in rows)
    console.print(f"total lag {total} message(s); {len(workers)} live worker(s)")
    return 0


# --- cvserve submit / worker / results ---------------------------------------------------------


def expand_paths(patterns: list[str]) -> list[Path]:
    """Files named, found under folders (recursively), or matched by globs; sorted, no repeats."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        if _GLOB_CHARS & set(pattern):
            matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
        else:
            matches = [Path(pattern)]
        for path in matches:
            if path.is_dir():
                found.update(dict.fromkeys(sorted(p for p in path.rglob("*") if p.is_file())))
            elif path.is_file():
                found[path] = None
            else:
                raise SystemExit(f"cvserve submit: no such file or folder: {path}")
    return list(found)


def cmd_submit(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from cvserve.broker.producer import ImageProducer, MessageTooLarge
    from cvserve.preprocess.spec import PreprocessError

    paths = expand_paths(args.paths)
    if not paths:
        raise SystemExit("cvserve submit: no files to send")
    jobs = [path for _ in range(args.repeat) for path in paths]
    console = Console(stderr=True)
    failures = 0
    sent: list[tuple[str, Path, Any]] = []
    interval = 1.0 / args.rate if args.rate else 0.0
    with ImageProducer(bootstrap_address(args), args.route, args.namespace) as producer:
        progress = Progress(
            TextColumn("submit"), BarColumn(), MofNCompleteColumn(), console=console
        )
        with progress:
            task = progress.add_task("submit", total=len(jobs))
            next_at = time.monotonic()
            for path in jobs:
                if interval:
                    time.sleep(max(0.0, next_at - time.monotonic()))  # pacing to --rate
                    next_at += interval
                try:
                    request_id, future = producer.send(
                        path.read_bytes(), key=args.key or "", validate=not args.no_validate
                    )
                except (PreprocessError, MessageTooLarge, OSError) as exc:
                    console.print(f"[red]{path}: {exc}[/red]")
                    failures += 1
                else:
                    sent.append((request_id, path, future))
                progress.advance(task)
            producer.flush()
    delivered = 0
    for request_id, path, future in sent:
        try:
            future.result(timeout=0)
        except Exception as exc:
            console.print(f"[red]{path}: not delivered: {exc}[/red]")
            failures += 1
            continue
        delivered += 1
        print(f"{request_id}\t{path}")
    console.print(f"submitted {delivered} of {len(jobs)} image(s) to {producer.topic}")
    return 1 if failures else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from cvserve.broker.stats import default_stats_dir
    from cvserve.broker.worker import StageWorker

    # librdkafka's info lines (disconnects it recovers from) would hide ours.
    logging.getLogger("cvserve.kafka").setLevel(logging.WARNING)
    bootstrap = bootstrap_address(args)

    def start(stage: str, config: WorkerConfig, options: Any) -> StageWorker:
        return StageWorker(bootstrap, args.route, stage, args.triton_url, config, **options)

    return run_worker(
        args,
        "worker",
        args.route,
        default_stats_dir(),
        start,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        max_poll_interval_ms=args.max_poll_interval_ms,
    )


def result_json(message: Any) -> dict[str, Any]:
    """One result as `cvserve results` prints it."""
    from cvserve.broker.schema import decode_outputs

    return {
        "request_id": message.request_id,
        "crop_index": None if message.crop is None else message.crop.index,
        "stage": message.stage,
        "key": message.record_key,
        "origin": message.origin,
        "outputs": {k: v.tolist() for k, v in decode_outputs(message.value).items()},
        "hops": [[h.label, h.t_ns] for h in message.trace.hops],
        "hops_dropped": message.trace.dropped,
    }


def reading_options(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """How ``cvserve [redis] results`` reads, whatever the broker: from the beginning unless
    ``--from-end``, remembering recent ids only, naming each skipped record on stderr."""

    def skipped(record: Any, reason: str) -> None:
        print(f"cvserve {command}: skipped {record.source}: {reason}", file=sys.stderr, flush=True)

    return {"from_beginning": not args.from_end, "keep": False, "on_malformed": skipped}


def print_results(reader: Any, args: argparse.Namespace, command: str, records: str) -> None:
    """Print each unique result ``reader`` (a `UniqueResults`) reads as a JSON line, until
    ``--idle-timeout`` passes without one (``--follow``: until Ctrl-C); then the counts, what is
    not a result called ``records``, on stderr."""
    with reader:
        idle = None if args.follow else args.idle_timeout
        for message in reader.follow(stop_event(), idle_timeout_s=idle):
            print(json.dumps(result_json(message)), flush=True)
    print(
        f"{reader.seen.added} unique result(s), {reader.duplicates} duplicate(s) dropped, "
        f"{reader.malformed} {records} that are not results skipped",
        file=sys.stderr,
    )


def cmd_results(args: argparse.Namespace) -> int:
    from cvserve.broker.results import ResultReader

    options = reading_options(args, "results")
    reader = ResultReader(bootstrap_address(args), args.route, args.namespace, **options)
    print_results(reader, args, "results", "record(s)")
    return 0


# --- wiring ------------------------------------------------------------------------------------


def _add_broker_options(parser: argparse.ArgumentParser, pipeline: bool = True) -> None:
    parser.add_argument(
        "--bootstrap",
        default=None,
        help=f"host:port (default ${BOOTSTRAP_ENV} " "or the broker 'cvserve kafka start' runs)",
    )
    parser.add_argument(
        "--namespace",
        default=None,
        help="topic prefix (default $CVSERVE_KAFKA_NAMESPACE or cvserve)",
    )
    parser.add_argument(
        "--client-config",
        default=None,
        metavar="FILE",
        help="librdkafka security settings (security.protocol, sasl.*, ssl.*), key=value lines "
        "(default $CVSERVE_KAFKA_CLIENT_CONFIG; CVSERVE_KAFKA_SASL_PASSWORD etc. override)",
    )
    if pipeline:
        parser.add_argument("--pipeline", default="classify")
        parser.add_argument(
            "--file",
            default=None,
            metavar="F",
            help="a pipeline file (its name and, for a composite, its route); instead of "
            "--pipeline",
        )


def _named(command: Any, name: str) -> Any:
    """``command`` with ``args.route`` the route of ``--file`` or ``--pipeline``
    (`pipeline_args.pipeline_route`) and ``args.pipeline`` its name."""

    def run(args: argparse.Namespace) -> int:
        from cvserve.pipelines.app.pipeline_args import pipeline_route

        args.route = pipeline_route(args, name)
        args.pipeline = args.route.pipeline
        return command(args)

    return run


def register(commands: Any, benches: Any = None) -> None:
    """Add the Kafka subcommands to ``cvserve`` (``commands``); none go under ``cvserve bench``
    (``benches``)."""
    kafka = commands.add_parser("kafka", help="the local Kafka broker, topics and lag")
    sub = kafka.add_subparsers(dest="kafka_command", required=True)

    start = sub.add_parser("start", help="start the local broker(s) (detached unless --foreground)")
    start.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="KRaft nodes (broker and controller each); 3 survives losing one: topics get "
        "replication factor min(3, N) and min.insync.replicas 2",
    )
    start.add_argument(
        "--secure",
        action="store_true",
        help="require SASL/SCRAM-SHA-512 over TLS (CA, certificates and users made at first start)",
    )
    start.add_argument(
        "--mtls", action="store_true", help="--secure and clients also present a certificate"
    )
    start.add_argument(
        "--port", type=int, default=None, help="first broker's client port (default: free)"
    )
    start.add_argument("--heap-mb", type=int, default=DEFAULT_HEAP_MB, help="per broker")
    start.add_argument("--foreground", action="store_true", help="run until Ctrl-C")
    start.add_argument("--timeout", type=float, default=90.0, help="seconds to get ready")
    start.set_defaults(func=cmd_kafka_start)
    stop = sub.add_parser("stop", help="stop the local broker(s) by pid")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")
    stop.set_defaults(func=cmd_kafka_stop)
    status = sub.add_parser("status", help="is every local broker running and answering")
    status.set_defaults(func=cmd_kafka_status)
    for parser in (start, stop, status):
        parser.add_argument(
            "--state-dir",
            default=None,
            help=f"default {KAFKA_HOME_HELP}/broker",
        )

    topics = sub.add_parser("topics", help="create (if missing) and list a pipeline's topics")
    _add_broker_options(topics)
    topics.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    topics.set_defaults(func=_named(cmd_kafka_topics, "kafka topics"))
    lag = sub.add_parser("lag", help="consumer lag per partition and live workers' in-flight")
    _add_broker_options(lag)
    lag.add_argument(
        "--stats-dir",
        default=None,
        help=f"default {KAFKA_HOME_HELP}/workers",
    )
    lag.add_argument("--format", choices=["table", "prometheus"], default="table")
    lag.set_defaults(func=_named(cmd_kafka_lag, "kafka lag"))

    submit = commands.add_parser("submit", help="send images to a pipeline over Kafka")
    submit.add_argument("paths", nargs="+", help="files, folders (recursive) or globs")
    _add_broker_options(submit)
    submit.add_argument("--rate", type=float, default=0.0, help="images/s (default: no limit)")
    submit.add_argument("--repeat", type=int, default=1, help="send the whole list N times")
    submit.add_argument("--key", default=None, help="record key (default: the request id)")
    submit.add_argument(
        "--no-validate",
        action="store_true",
        help="send files the image sniffer refuses (the worker dead-letters them)",
    )
    submit.set_defaults(func=_named(cmd_submit, "submit"))

    worker = commands.add_parser("worker", help="run one stage worker of a pipeline")
    _add_broker_options(worker)
    add_worker_options(
        worker, "JSON counters (default: in the --stats-dir default of `cvserve kafka lag`)"
    )
    defaults = WORKER_DEFAULTS
    worker.add_argument("--session-timeout-ms", type=int, default=defaults.session_timeout_ms)
    worker.add_argument("--heartbeat-interval-ms", type=int, default=defaults.heartbeat_interval_ms)
    worker.add_argument(
        "--max-poll-interval-ms",
        type=int,
        default=defaults.max_poll_interval_ms,
        help="group liveness between polls (a worker keeps polling while a batch is in hand)",
    )
    worker.set_defaults(func=_named(cmd_worker, "worker"))

    results = commands.add_parser("results", help="print a pipeline's results, each once")
    _add_broker_options(results)
    results.add_argument("--follow", action="store_true", help="keep reading until Ctrl-C")
    results.add_argument("--from-end", action="store_true", help="only results from now on")
    results.add_argument(
        "--idle-timeout",
        type=float,
        default=3.0,
        help="without --follow: stop after this long without a new result",
    )
    results.set_defaults(func=_named(cmd_results, "results"))


def main(argv: list[str] | None = None) -> int:
    """These subcommands alone (``python -m cvserve.pipelines.app.kafka_commands worker ...``),
    without the rest of ``cvserve``'s parser."""
    parser = argparse.ArgumentParser(prog="cvserve", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
