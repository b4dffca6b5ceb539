"""Backpressure: a stuck stage grows its topic's lag, not its worker's memory (real Kafka)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from broker_testing import PIPELINE, WorkerUnderTest, wait_until

from cvserve.broker.lag import pipeline_lag
from cvserve.broker.producer import ImageProducer
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.ports import free_port
from cvserve.profiling.bench.kafka import jpeg_near

IMAGE_BYTES = 1_000_000
BACKLOG = 120  # ~120 MB behind the worker: far more than it may hold
BATCH = 4  # the start_worker fixture's --batch-size
ALLOWED_GROWTH_MB = 60  # prefetch (8 MB) + one fetch (<= 16 MB) + allocator slack


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def test_a_stuck_stage_grows_lag_not_memory(
    kafka: KafkaBroker, start_worker: Callable[..., WorkerUnderTest], namespace: str
) -> None:
    image = jpeg_near(IMAGE_BYTES, seed=5)
    worker = start_worker(f"127.0.0.1:{free_port()}")  # no Triton there: every call fails
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        producer.submit([image])
        worker.wait_stats(lambda s: s.state == "retrying", 60, "stuck on its first batch")
        baseline = rss_mb(worker.process.pid)
        producer.submit([image] * BACKLOG)

    def backlog() -> int:
        return sum(row.lag for row in pipeline_lag(kafka.bootstrap, PIPELINE, namespace))

    wait_until(lambda: backlog() == BACKLOG + 1, 60, "the whole backlog on the broker")
    peak, end = baseline, time.monotonic() + 5.0
    while time.monotonic() < end:  # measuring: librdkafka fetches ahead in the background
        peak = max(peak, rss_mb(worker.process.pid))
        time.sleep(0.1)
    stats = worker.stats()
    assert stats is not None and stats.state == "retrying"
    assert stats.consumed <= BATCH and stats.in_flight <= BATCH and stats.committed_batches == 0
    assert backlog() == BACKLOG + 1  # nothing committed: all of it is lag
    assert (
        peak - baseline < ALLOWED_GROWTH_MB
    ), f"worker RSS grew {peak - baseline:.0f} MB with {BACKLOG} MB behind it"
