"""`cvserve bench kafka`'s hop measurement on the session broker (its numbers, not their speed)."""

from __future__ import annotations

import uuid

import pytest

from cvserve.broker.clients import end_offsets, new_consumer
from cvserve.broker.topics import ensure_topics
from cvserve.deploy.kafka import KafkaBroker
from cvserve.profiling.bench.kafka import jpeg_near, measure


def test_jpeg_near_hits_the_requested_size() -> None:
    for target in (20_000, 150_000):
        assert len(jpeg_near(target, seed=1)) == pytest.approx(target, rel=0.1)


def test_hop_measurement_is_consistent(kafka: KafkaBroker) -> None:
    row = measure(
        kafka.bootstrap, size_kb=20, latency_messages=12, throughput_messages=30, warmup_messages=5
    )
    assert row["latency_messages"] == 12 and row["throughput_messages"] == 30
    assert row["warmup_messages"] == 5 and row["warmup_p50_ms"] > 0
    assert row["produce_ack_p50_ms"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["message_bytes_mean"] == pytest.approx(20_000, rel=0.1)
    mb_per_s = row["msgs_per_s"] * row["message_bytes_mean"] / 1e6
    assert row["mb_per_s"] == pytest.approx(mb_per_s, rel=0.05, abs=0.2)


def test_end_offsets_of_a_topic_just_created(kafka: KafkaBroker) -> None:
    """A fresh topic's partitions may answer NOT_LEADER_FOR_PARTITION for a moment: retried."""
    topic = f"fresh-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, [topic], partitions=3)
    consumer = new_consumer(kafka.bootstrap)
    try:
        assert end_offsets(consumer, topic, kafka.bootstrap) == {0: 0, 1: 0, 2: 0}
    finally:
        consumer.close()
