"""`cvserve bench kafka`'s hop measurement on the session broker (its numbers, not their speed)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from broker_testing import require_tool

from cvserve.broker.clients import end_offsets, new_consumer
from cvserve.broker.topics import ensure_topics
from cvserve.deploy.kafka import KafkaBroker
from cvserve.profiling.bench.kafka import (
    REDIS_LABEL,
    BrokerSetup,
    bench_kafka,
    jpeg_near,
    measure,
)


def test_jpeg_near_hits_the_requested_size() -> None:
    for target in (20_000, 150_000):
        assert len(jpeg_near(target, seed=1)) == pytest.approx(target, rel=0.1)


def test_hop_measurement_is_consistent(kafka: KafkaBroker) -> None:
    row = measure(
        kafka.bootstrap, size_kb=20, latency_messages=12, throughput_messages=30,
        warmup_messages=5, warmup_max_messages=5,
    )  # fmt: skip
    assert row["latency_messages"] == 12 and row["throughput_messages"] == 30
    assert row["warmup_messages"] == 5 and row["warmup_p50_ms"] > 0
    assert len(row["warmup_window_p50_ms"]) == 1 and row["warmup_steady"] is False
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


@pytest.mark.kafka
@pytest.mark.redis
def test_bench_measures_every_setup_in_alternating_rounds(tmp_path: Path) -> None:
    """Each broker setup (a plain and a SASL/TLS broker here, Redis Streams beside) gets one
    row: the median of its rounds, the spread, the first round after the warm-up only."""
    require_tool("redis-server", "apt-get install redis-server")
    setups = (BrokerSetup("plain", 1), BrokerSetup("sasl-tls", 1, secure=True))
    out = tmp_path / "bench.json"
    report = bench_kafka(
        size_kb=20, latency_messages=8, throughput_messages=16, warmup_messages=4,
        warmup_max_messages=4, pipeline=None, out=out, setups=setups, with_redis=True, rounds=2,
    )  # fmt: skip
    rows = report["results"]
    assert list(rows) == ["plain", "sasl-tls", REDIS_LABEL]
    for row in rows.values():
        assert row["rounds"] == 2 and len(row["per_round"]) == 2
        assert [r["warmup_messages"] for r in row["per_round"]] == [4, 0]
        for key in ("p50_ms", "p99_ms", "msgs_per_s"):
            low, high = row[f"{key}_range"]
            assert 0 < low <= row[key] <= high
    assert (
        json.loads(out.read_text())["results"]["sasl-tls"]["p50_ms"] == rows["sasl-tls"]["p50_ms"]
    )
    assert report["bootstrap"]["sasl-tls"] != report["bootstrap"]["plain"]


def test_bench_without_redis_server_skips_the_comparison_with_a_line(
    kafka: KafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server there (the broker runs already)
    report = bench_kafka(
        bootstrap=kafka.bootstrap, size_kb=20, latency_messages=5, throughput_messages=10,
        warmup_messages=2, warmup_max_messages=2, pipeline=None, out=tmp_path / "b.json",
        with_redis=True, rounds=1,
    )  # fmt: skip
    assert list(report["results"]) == [kafka.bootstrap]  # Kafka measured, Redis not
    assert "Redis Streams skipped: redis-server not found" in capsys.readouterr().out
