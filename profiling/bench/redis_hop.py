"""`cvserve bench redis`: what one Redis Streams hop costs for the Kafka hop's records, as the paper
compared brokers between two DNNs (`cvserve bench kafka --with redis` puts both in one table).

A Redis hop is XADD → server → XREAD (blocking, no group) of a schema-v1 record of a synthetic
JPEG of about ``size_kb`` KB (`profiling.bench.hop_records.jpeg_near`, the Kafka hop's images), with
cvserve's schema on both ends (`broker.redis_streams`). Latency: one message at a time, each
received before the next is sent, after a warm-up until steady (`hop_records.warm_up`); the
XADD reply time is the "producer acknowledgement" (the server has the entry, in memory: the
local server keeps no disk copy, where Kafka's acks=all means written by every in-sync replica).
Throughput: ``throughput_messages`` sent back to back, from the first send to the last receive.
`measure_redis` and `profiling.bench.kafka.measure` are both `hop_records.measure_hop`: one
table holds both.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from cvserve.broker.redis_streams import StreamReader, record_fields, redis_client
from cvserve.broker.schema import Message, Record
from cvserve.deploy.redis import RedisServer
from cvserve.profiling.bench.hop_records import (
    BENCH_IN,
    DEFAULT_HOP,
    HopReceiver,
    HopSettings,
    measure_hop,
)
from cvserve.profiling.machine import machine_info, write_report

# The receiver trims what it has read every this many entries: a 150 KB stream stays small.
_TRIM_EVERY = 100


class _StreamReceiver(HopReceiver):
    """Reads the bench stream from its end on a connection of its own."""

    def __init__(self, url: str, stream: str) -> None:
        super().__init__()
        self.client = redis_client(url)
        self.reader = StreamReader(self.client, stream, from_beginning=False)

    def run(self) -> None:
        since_trim = 0
        while not self.stop.is_set():
            records = self.reader.poll(0.1)
            now = time.time_ns()
            self.add(now, [Message.from_record(r) for r in records])
            since_trim += len(records)
            if since_trim >= _TRIM_EVERY:  # after the receive time: not part of a hop
                self.client.xtrim(self.reader.stream, minid=self.reader.position)
                since_trim = 0
        self.client.close()


def measure_redis(url: str, settings: HopSettings) -> dict[str, Any]:
    """One Redis Streams hop on the server at ``url``: the keys of `bench.kafka.measure`."""
    client = redis_client(url)
    client.delete(BENCH_IN)  # an earlier run's entries are not this run's

    def send(record: Record) -> None:  # the XADD reply is the acknowledgement
        client.xadd(BENCH_IN, record_fields(record))

    try:  # a burst waits for each reply in turn
        return measure_hop(_StreamReceiver(url, BENCH_IN), send, settings)
    finally:
        with contextlib.suppress(redis.RedisError):
            client.delete(BENCH_IN)
        client.close()


def hops_table(rows: dict[str, dict[str, Any]]) -> Table:
    """One row per broker (name -> `measure` / `measure_redis` result)."""
    size_kb = next(iter(rows.values()))["message_bytes_mean"] / 1000
    table = Table(title=f"One broker hop, {size_kb:.0f} KB JPEGs, loopback")
    columns = ("broker", "p50 ms", "p99 ms", "ack p50 ms", "warm-up p50 ms", "msgs/s", "MB/s")
    for column in columns:
        table.add_column(column, justify="left" if column == "broker" else "right")
    for name, row in rows.items():
        warmup = row["warmup_p50_ms"]
        table.add_row(
            name,
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['produce_ack_p50_ms']:.2f}",
            "-" if warmup is None else f"{warmup:.2f}",
            f"{row['msgs_per_s']:.0f}",
            f"{row['mb_per_s']:.0f}",
        )
    return table


def redis_version(url: str) -> str:
    client = redis_client(url)
    with contextlib.closing(client):
        return str(client.info("server")["redis_version"])


def bench_redis_pipeline(
    pipeline: str, redis_url: str, duration_s: float, console: Console
) -> dict[str, Any]:
    """``pipeline`` across Redis Streams at ``redis_url`` with 1 vs 2 workers per stage
    (`bench.broker.bench_broker_pipeline`), for the caller's report (`bench_redis`,
    `bench.kafka.bench_kafka` with Redis)."""
    from cvserve.profiling.bench.broker import bench_broker_pipeline

    return bench_broker_pipeline(
        pipeline,
        duration_s=duration_s,
        bootstrap=redis_url,
        console=console,
        write=False,
        broker="redis",
    )


def bench_redis(
    redis_url: str | None = None,
    hop: HopSettings = DEFAULT_HOP,
    pipeline: str | None = "detect_identify",
    pipeline_duration_s: float = 15.0,
    out: Path | None = None,
) -> dict[str, Any]:
    """Measure one hop (``hop``'s records) on the Redis server at ``redis_url`` (or a temporary
    local one), then
    (unless ``pipeline`` is None) that pipeline over Redis Streams with 1 vs 2 workers per stage.
    Prints tables, writes one JSON (``out`` or ``runs/bench-redis-<time>.json``)."""
    console = Console()
    hops: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvserve-bench-redis-")))
        if redis_url is None:
            redis_url = stack.enter_context(RedisServer(tmp / "redis")).url
            console.print(f"started a local redis-server at {redis_url}")
        version = redis_version(redis_url)
        hops[f"Redis Streams {version} (redis-py {redis.__version__})"] = measure_redis(
            redis_url, hop
        )
        console.print(hops_table(hops))
        report: dict[str, Any] = {
            "benchmark": "redis-hop",
            "redis_url": redis_url,
            "machine": machine_info(),
            "hops": hops,
        }
        if pipeline:
            report["pipeline"] = bench_redis_pipeline(
                pipeline, redis_url, pipeline_duration_s, console
            )
    write_report(report, "bench-redis", out, console=console)
    return report
