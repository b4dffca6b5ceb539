"""`cvserve bench kafka`: what one Kafka hop costs for image-sized messages on loopback.

A hop is producer `produce` → broker (acks=all) → consumer `consume`, with cvserve's clients
(`broker.clients`) and schema on both ends. Latency: one message at a time, each waited for
(p50/p99 over ``latency_messages``), after ``warmup_messages`` (a fresh broker's JVM needs a few
hundred records before its code is compiled: the warm-up's p50 is reported too); the producer's
acknowledgement time alone is reported beside it.
Throughput: ``throughput_messages`` sent back to back; msgs/s and MB/s from the first send to
the last receive. Messages are synthetic JPEGs of about ``size_kb`` KB.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import threading
import time
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
from cvserve.broker.producer import image_message
from cvserve.broker.schema import Message, Record
from cvserve.broker.topics import Topics, ensure_topics
from cvserve.deploy.kafka import KafkaBroker, kafka_version
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling.machine import machine_info, write_report

BENCH_TOPICS = Topics("bench")
BENCH_STAGE = "hop"


def jpeg_near(target_bytes: int, seed: int) -> bytes:
    """A synthetic 4:3 JPEG within a few percent of ``target_bytes``."""
    width = 800
    image = synthetic_image(width, width * 3 // 4, seed)
    for _ in range(3):  # encoded size grows about linearly with the pixel count
        width = max(16, round(width * math.sqrt(target_bytes / len(image))))
        image = synthetic_image(width, width * 3 // 4, seed)
    return image


class _Receiver(threading.Thread):
    """Consumes the bench topic from its end; records (receive ns, message) pairs."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = new_consumer(bootstrap)
        ends = end_offsets(self.consumer, topic, bootstrap)  # from the end as of now
        partitions = [TopicPartition(topic, p, end) for p, end in ends.items()]
        self.consumer.assign(partitions)
        self.received: list[tuple[int, Message]] = []
        self.arrived = threading.Condition()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for r in consume_available(self.consumer, 100, 0.1):
                if r.error() is not None:
                    continue
                now = time.time_ns()
                message = Message.from_record(Record.consumed(r))
                with self.arrived:
                    self.received.append((now, message))
                    self.arrived.notify_all()
        self.consumer.close()

    def wait_for(self, count: int, timeout_s: float) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout_s):
                raise TimeoutError(f"{len(self.received)} of {count} messages after {timeout_s} s")


def _send_ns(message: Message) -> int:
    return message.trace.hops[-1].t_ns


def measure(
    bootstrap: str,
    size_kb: int,
    latency_messages: int,
    throughput_messages: int,
    warmup_messages: int = 500,
) -> dict[str, Any]:
    topic = BENCH_TOPICS.stage_in(BENCH_STAGE)
    ensure_topics(bootstrap, [topic])
    images = [jpeg_near(size_kb * 1000, seed) for seed in range(4)]
    receiver = _Receiver(bootstrap, topic)
    receiver.start()
    producer = new_producer(bootstrap)

    def send(n: int) -> Any:
        message = image_message(images[n % len(images)], BENCH_TOPICS.pipeline, BENCH_STAGE)
        message = message.with_hop("bench.send")
        record = message.to_record()
        return produce(producer, topic, record.key, record.value, record.headers)

    def one_at_a_time(count: int) -> tuple[np.ndarray, np.ndarray]:
        """(hop ms, ack ms) of ``count`` messages, each received before the next is sent."""
        base = len(receiver.received)
        acks_ms = []
        for n in range(count):
            start = time.perf_counter()
            wait_delivered(producer, [send(n)], timeout_s=30)
            acks_ms.append((time.perf_counter() - start) * 1e3)
            receiver.wait_for(base + n + 1, 30)
        hops = receiver.received[base : base + count]
        return np.array([(t - _send_ns(m)) / 1e6 for t, m in hops]), np.array(acks_ms)

    try:
        warmup_ms, _ = one_at_a_time(warmup_messages)
        latencies_ms, acks_ms = one_at_a_time(latency_messages)

        base = len(receiver.received)
        start = time.time_ns()
        futures = [send(n) for n in range(throughput_messages)]
        wait_delivered(producer, futures, timeout_s=120)
        acked_s = (time.time_ns() - start) / 1e9
        receiver.wait_for(base + throughput_messages, 120)
        burst = receiver.received[base : base + throughput_messages]
        elapsed_s = (max(t for t, _ in burst) - start) / 1e9
        total_bytes = sum(len(m.value) for _, m in burst)
    finally:
        producer.flush(10)
        receiver.stop.set()
        receiver.join(timeout=10)
    return {
        "message_bytes_mean": int(np.mean([len(i) for i in images])),
        "warmup_messages": warmup_messages,
        "warmup_p50_ms": round(float(np.percentile(warmup_ms, 50)), 3) if warmup_messages else None,
        "latency_messages": latency_messages,
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 3),
        "max_ms": round(float(latencies_ms.max()), 3),
        "produce_ack_p50_ms": round(float(np.percentile(acks_ms, 50)), 3),
        "throughput_messages": throughput_messages,
        "msgs_per_s": round(throughput_messages / elapsed_s, 1),
        "mb_per_s": round(total_bytes / elapsed_s / 1e6, 1),
        "produce_acked_msgs_per_s": round(throughput_messages / acked_s, 1),
    }


def hop_table(row: dict[str, Any]) -> Table:
    table = Table(title=f"One Kafka hop, {row['message_bytes_mean'] / 1000:.0f} KB JPEGs, loopback")
    columns = (
        "p50 ms",
        "p99 ms",
        "ack p50 ms",
        "warm-up p50 ms",
        "msgs/s",
        "MB/s",
        "acked msgs/s (produce)",
    )
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(
        f"{row['p50_ms']:.2f}",
        f"{row['p99_ms']:.2f}",
        f"{row['produce_ack_p50_ms']:.2f}",
        f"{row['warmup_p50_ms']:.2f}" if row["warmup_p50_ms"] is not None else "-",
        f"{row['msgs_per_s']:.0f}",
        f"{row['mb_per_s']:.0f}",
        f"{row['produce_acked_msgs_per_s']:.0f}",
    )
    return table


def bench_kafka(
    bootstrap: str | None = None,
    size_kb: int = 150,
    latency_messages: int = 300,
    throughput_messages: int = 1000,
    warmup_messages: int = 500,
    pipeline: str | None = "detect_identify",
    pipeline_duration_s: float = 15.0,
    out: Path | None = None,
) -> dict[str, Any]:
    """Measure one hop on the broker at ``bootstrap``, or on a temporary local one, then (unless
    ``pipeline`` is None) that multi-DNN pipeline's throughput across the same broker with 1 vs 2
    workers per stage (`bench_broker.bench_broker_pipeline`); print tables and write one JSON
    (``out`` or ``runs/bench-kafka-<time>.json``)."""
    console = Console()
    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvserve-kafka-")))
            broker = stack.enter_context(KafkaBroker(state))
            bootstrap = broker.bootstrap
            console.print(f"started a local Kafka {kafka_version()} broker at {bootstrap}")
        row = measure(bootstrap, size_kb, latency_messages, throughput_messages, warmup_messages)
        console.print(hop_table(row))
        report: dict[str, Any] = {
            "benchmark": "kafka-hop",
            "kafka": kafka_version(),
            "client": f"confluent-kafka {confluent_kafka.version()[0]} (librdkafka "
            f"{confluent_kafka.libversion()[0]})",
            "bootstrap": bootstrap,
            "machine": machine_info(),
            "result": row,
        }
        if pipeline:
            from cvserve.profiling.bench.broker import bench_broker_pipeline

            report["pipeline"] = bench_broker_pipeline(
                pipeline,
                duration_s=pipeline_duration_s,
                bootstrap=bootstrap,
                console=console,
                write=False,
            )
    out = write_report(report, "bench-kafka", out)
    console.print(f"wrote {out}")
    return report
