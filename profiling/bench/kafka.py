"""`cvserve bench kafka`: what one Kafka hop costs for image-sized messages on loopback.

A hop is producer `produce` → broker (acks=all) → consumer `consume`, with cvserve's clients
(`broker.clients`) and schema on both ends. Latency: one message at a time, each waited for
(p50/p99 over ``latency_messages``), after a warm-up until the hop is steady (a fresh broker's JVM
compiles its code over thousands of records: `hop_records.warm_up`; its p50 per window is
reported too); the producer's acknowledgement time alone is reported beside it.
Throughput: ``throughput_messages`` sent back to back; msgs/s and MB/s from the first send to
the last receive. Messages are synthetic JPEGs of about ``size_kb`` KB, on a bench topic of one
partition that keeps a bounded log (`BENCH_TOPIC_CONFIG`). The measurement is
`hop_records.measure_hop`, the Redis Streams hop's too (`bench.redis_hop`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
import numpy as np
from rich.console import Console
from rich.table import Table

from cvserve.broker.clients import (
    TopicPartition,
    consume_available,
    end_offsets,
    new_consumer,
    new_producer,
    produce,
    wait_delivered,
)
from cvserve.broker.schema import Message, Record
from cvserve.broker.topics import ensure_topics
from cvserve.deploy.kafka import kafka_version
from cvserve.deploy.kafka_client_config import CLIENT_CONFIG_ENV
from cvserve.deploy.kafka_cluster import KafkaCluster
from cvserve.deploy.kafka_limits import MIB
from cvserve.profiling.bench.hop_records import (
    BENCH_IN,
    DEFAULT_HOP,
    HopReceiver,
    HopSettings,
    measure_hop,
)
from cvserve.profiling.bench.hop_records import jpeg_near as jpeg_near  # where tests find it
from cvserve.profiling.machine import machine_info, write_report
from cvserve.profiling.quiet import wait_until_quiet

# The bench topic keeps a bounded log, as the Redis hop trims what it read. A run writes GBs (up
# to 10,000 warm-up records of 150 KB per setup, three times over with RF 3); a page cache grown
# by GBs made this VM slow at every later hop (runs went from 1.0 / 3.0 ms to 3.3 / 9 ms for one /
# three brokers within a round: here touching memory beyond ~7 GB in use costs 24–60 µs a 4 KB
# page, in the brokers' appends to the page cache). One partition: the hop is serial, and
# segments roll every ~440 records, not every ~9 (8 MiB segments over 6 partitions doubled p99).
# The bench's own clusters look for segments to delete every second from their first (Kafka's
# defaults: after 30 s, then every 5 minutes).
BENCH_PARTITIONS = 1
BENCH_TOPIC_CONFIG = {
    "segment.bytes": str(64 * MIB),
    "retention.bytes": str(64 * MIB),
    "file.delete.delay.ms": "0",
}
BENCH_BROKER_PROPERTIES = {
    "log.initial.task.delay.ms": "1000",
    "log.retention.check.interval.ms": "1000",
}


class _Receiver(HopReceiver):
    """Consumes the bench topic from its end."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__()
        self.consumer = new_consumer(bootstrap)
        ends = end_offsets(self.consumer, topic, bootstrap)  # from the end as of now
        partitions = [TopicPartition(topic, p, end) for p, end in ends.items()]
        self.consumer.assign(partitions)

    def run(self) -> None:
        while not self.stop.is_set():
            for r in consume_available(self.consumer, 100, 0.1):
                if r.error() is not None:
                    continue
                now = time.time_ns()
                self.add(now, [Message.from_record(Record.consumed(r))])
        self.consumer.close()


def measure(bootstrap: str, settings: HopSettings) -> dict[str, Any]:
    """One Kafka hop on the cluster at ``bootstrap`` (acks=all): `hop_records.measure_hop`."""
    ensure_topics(bootstrap, [BENCH_IN], partitions=BENCH_PARTITIONS, config=BENCH_TOPIC_CONFIG)
    producer = new_producer(bootstrap)

    def send(record: Record) -> Any:
        return produce(producer, BENCH_IN, record.key, record.value, record.headers)

    def send_and_wait_ack(record: Record) -> None:
        wait_delivered(producer, [send(record)], timeout_s=30)

    def send_burst(records: list[Record]) -> None:
        wait_delivered(producer, [send(r) for r in records], timeout_s=120)

    try:
        return measure_hop(_Receiver(bootstrap, BENCH_IN), send_and_wait_ack, settings, send_burst)
    finally:
        producer.flush(10)


@dataclass(frozen=True)
class BrokerSetup:
    """One local Kafka to measure: ``brokers`` nodes, with SASL/SCRAM over TLS or not."""

    label: str
    brokers: int
    secure: bool = False


SETUPS = (
    BrokerSetup("1 broker", 1),
    BrokerSetup("3 brokers, RF 3", 3),
    BrokerSetup("3 brokers, RF 3, SASL/TLS", 3, secure=True),
)
REDIS_LABEL = "Redis Streams"


@contextlib.contextmanager
def client_config(path: Path | None) -> Iterator[None]:
    """cvserve's clients made inside use the security settings in ``path`` (None: plain)."""
    before = os.environ.get(CLIENT_CONFIG_ENV)
    if path is None:
        os.environ.pop(CLIENT_CONFIG_ENV, None)
    else:
        os.environ[CLIENT_CONFIG_ENV] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CLIENT_CONFIG_ENV, None)
        else:
            os.environ[CLIENT_CONFIG_ENV] = before


def settle() -> float:
    """Before each setup's measurement: the log pages the setups before wrote are written back
    now, not during this one's hops (the disk wrote 0.3–1.7 GB bursts during later setups), and
    the machine is waited for until quiet (`profiling.quiet`). The seconds it waited."""
    os.sync()
    return wait_until_quiet()


def summarize_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over ``rounds`` (one `measure` each), with its min and max."""
    summary: dict[str, Any] = {"rounds": len(rounds), "per_round": rounds}
    for key in ("p50_ms", "p99_ms", "produce_ack_p50_ms", "msgs_per_s", "mb_per_s"):
        values = [r[key] for r in rounds]
        summary[key] = round(float(np.median(values)), 3)
        summary[f"{key}_range"] = [round(min(values), 3), round(max(values), 3)]
    summary["message_bytes_mean"] = rounds[0]["message_bytes_mean"]
    summary["warmup_p50_ms"] = rounds[0]["warmup_p50_ms"]
    return summary


def add_security_cost(rows: dict[str, dict[str, Any]], setups: tuple[BrokerSetup, ...]) -> None:
    """Give each secure setup's row ``vs_plain_p50``: its p50 over the plain setup's with as many
    brokers, round by round (the two measured one after the other), the median with its range,
    and ``vs_plain`` naming that setup. Rows without such a pair are left as they are."""
    for setup in setups:
        plain = next((s for s in setups if s.brokers == setup.brokers and not s.secure), None)
        if not setup.secure or plain is None or not {setup.label, plain.label} <= rows.keys():
            continue
        pairs = zip(rows[setup.label]["per_round"], rows[plain.label]["per_round"], strict=True)
        ratios = [secure["p50_ms"] / base["p50_ms"] for secure, base in pairs]
        rows[setup.label].update(
            vs_plain=plain.label,
            vs_plain_p50=round(float(np.median(ratios)), 3),
            vs_plain_p50_range=[round(min(ratios), 3), round(max(ratios), 3)],
        )


def _warm_up(first_round: dict[str, Any]) -> str:
    """The warm-up of a setup's first round: messages sent, and whether the hop had settled."""
    count = first_round["warmup_messages"]
    return f"{count}" if first_round.get("warmup_steady") or not count else f"{count}, not steady"


def hops_table(rows: dict[str, dict[str, Any]], size_kb: int) -> Table:
    """One row per broker setup: medians over rounds, min–max beside each latency."""
    rounds = max(row["rounds"] for row in rows.values())
    table = Table(title=f"One broker hop, {size_kb} KB JPEGs, loopback (median of {rounds} rounds)")
    columns = ["broker", "p50 ms", "p99 ms", "ack p50 ms", "msgs/s", "MB/s", "vs 1st p50"]
    for column in [*columns, "vs plain p50", "warm-up"]:
        table.add_column(column, justify="left" if column == "broker" else "right")
    first = next(iter(rows.values()))["p50_ms"]

    def spread(row: dict[str, Any], key: str) -> str:
        low, high = row[f"{key}_range"]
        return f"{row[key]:.2f} ({low:.2f}–{high:.2f})" if row["rounds"] > 1 else f"{row[key]:.2f}"

    for label, row in rows.items():
        table.add_row(
            label,
            spread(row, "p50_ms"),
            spread(row, "p99_ms"),
            f"{row['produce_ack_p50_ms']:.2f}",
            f"{row['msgs_per_s']:.0f}",
            f"{row['mb_per_s']:.0f}",
            f"{row['p50_ms'] / first:.2f}",
            spread(row, "vs_plain_p50") if "vs_plain_p50" in row else "",
            _warm_up(row["per_round"][0]),
        )
    return table


def bench_kafka(
    bootstrap: str | None = None,
    hop: HopSettings = DEFAULT_HOP,
    pipeline: str | None = "detect_identify",
    pipeline_duration_s: float = 15.0,
    out: Path | None = None,
    setups: tuple[BrokerSetup, ...] = SETUPS,
    with_redis: bool = False,
    rounds: int = 3,
    heap_mb: int = 384,
) -> dict[str, Any]:
    """Measure one hop on the cluster at ``bootstrap`` (with the configured client settings), or
    on each of ``setups`` started here (and a Redis server with ``with_redis``), all running at
    once and measured in turn, ``rounds`` times with ``hop``'s records (the first round after its
    warm-up, until steady: `hop_records.warm_up`); then
    (unless ``pipeline`` is None) that multi-DNN pipeline across the first broker with 1 vs 2
    workers per stage (`bench_broker.bench_broker_pipeline`), and with ``with_redis`` the same
    across Redis Streams. Print tables, write one JSON (``out`` or
    ``runs/bench-kafka-<time>.json``)."""
    console = Console(width=None if sys.stdout.isatty() else 140)
    rows: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        targets: dict[str, tuple[str, Path | None]] = {}
        if bootstrap is not None:
            targets[bootstrap] = (bootstrap, None)
        else:
            for setup in setups:
                state = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="cvserve-kafka-"))
                )
                cluster = KafkaCluster(
                    state,
                    brokers=setup.brokers,
                    secure=setup.secure,
                    heap_mb=heap_mb,
                    extra_properties=BENCH_BROKER_PROPERTIES,
                )
                stack.enter_context(cluster)
                targets[setup.label] = (cluster.bootstrap, cluster.client_config_path)
                console.print(
                    f"started {setup.label} (Kafka {kafka_version()}) at {cluster.bootstrap}"
                )
        redis_url = None
        if with_redis:
            from cvserve.deploy.redis import RedisServer, RedisStartError, redis_server_binary

            try:
                redis_server_binary()
            except RedisStartError as exc:  # the comparison is skipped, Kafka still measured
                console.print(f"[yellow]Redis Streams skipped: {exc}[/yellow]")
            else:
                state = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="cvserve-redis-"))
                )
                redis_url = stack.enter_context(RedisServer(state)).url
                console.print(f"started a Redis server at {redis_url}")

        def clients(settings: Path | None) -> contextlib.AbstractContextManager[None]:
            # A cluster given by address: the settings the user configured; a local one: its own.
            return contextlib.nullcontext() if bootstrap is not None else client_config(settings)

        measured: dict[str, list[dict[str, Any]]] = {label: [] for label in targets}
        if redis_url:
            measured[REDIS_LABEL] = []
        for n in range(rounds):
            records = hop if n == 0 else hop.warmed()
            for label, (address, settings) in targets.items():
                quiet_s = settle()
                with clients(settings):
                    row = measure(address, records)
                measured[label].append({**row, "quiet_wait_s": quiet_s})
            if redis_url:
                from cvserve.profiling.bench.redis_hop import measure_redis

                quiet_s = settle()
                row = measure_redis(redis_url, records)
                measured[REDIS_LABEL].append({**row, "quiet_wait_s": quiet_s})
            console.print(f"round {n + 1} of {rounds} measured")
        rows = {label: summarize_rounds(results) for label, results in measured.items()}
        if bootstrap is None:
            add_security_cost(rows, setups)
        console.print(hops_table(rows, hop.size_kb))
        report: dict[str, Any] = {
            "benchmark": "kafka-hop",
            "kafka": kafka_version(),
            "client": f"confluent-kafka {confluent_kafka.version()[0]} (librdkafka "
            f"{confluent_kafka.libversion()[0]})",
            "bootstrap": {label: address for label, (address, _) in targets.items()},
            "machine": machine_info(),
            "results": rows,
        }
        if pipeline:
            from cvserve.profiling.bench.broker import bench_broker_pipeline

            first_label = next(iter(targets))
            address, settings = targets[first_label]
            with clients(settings):
                report["pipeline"] = bench_broker_pipeline(
                    pipeline,
                    duration_s=pipeline_duration_s,
                    bootstrap=address,
                    console=console,
                    write=False,
                )
            if redis_url:
                from cvserve.profiling.bench.redis_hop import bench_redis_pipeline

                report["pipeline_redis"] = bench_redis_pipeline(
                    pipeline, redis_url, pipeline_duration_s, console
                )
    write_report(report, "bench-kafka", out, console=console)
    return report
