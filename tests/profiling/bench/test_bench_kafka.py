"""`cvserve bench kafka`'s hop measurement on the session broker (its numbers, not their speed)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from broker_testing import require_tool

from cvserve.broker.clients import end_offsets, new_consumer, new_producer, produce, wait_delivered
from cvserve.broker.topics import ensure_topics
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.kafka_cluster import KafkaCluster
from cvserve.deploy.process import poll_until
from cvserve.profiling.bench.hop_records import HopSettings
from cvserve.profiling.bench.kafka import (
    BENCH_BROKER_PROPERTIES,
    BENCH_TOPIC_CONFIG,
    REDIS_LABEL,
    BrokerSetup,
    add_security_cost,
    bench_kafka,
    jpeg_near,
    measure,
)


def test_jpeg_near_hits_the_requested_size() -> None:
    for target in (20_000, 150_000):
        assert len(jpeg_near(target, seed=1)) == pytest.approx(target, rel=0.1)


def test_hop_measurement_is_consistent(kafka: KafkaBroker) -> None:
    row = measure(
        kafka.bootstrap,
        HopSettings(
            size_kb=20, latency_messages=12, throughput_messages=30, warmup_messages=5,
            warmup_max_messages=5,
        ),
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


def test_security_cost_pairs_each_round_with_the_plain_setup_of_as_many_brokers() -> None:
    setups = (BrokerSetup("one", 1), BrokerSetup("three", 3), BrokerSetup("three tls", 3, True))
    p50s = {"one": [1.0, 1.0, 1.0], "three": [2.0, 4.0, 3.0], "three tls": [3.0, 4.4, 3.3]}
    rows = {label: {"per_round": [{"p50_ms": v} for v in values]} for label, values in p50s.items()}
    add_security_cost(rows, setups)
    assert rows["three tls"]["vs_plain"] == "three"
    assert rows["three tls"]["vs_plain_p50"] == 1.1  # 1.5, 1.1, 1.1: paired, not 3.3 / 3.0
    assert rows["three tls"]["vs_plain_p50_range"] == [1.1, 1.5]
    assert "vs_plain_p50" not in rows["three"] and "vs_plain_p50" not in rows["one"]
    del rows["three"]  # no plain cluster of three measured: nothing to compare with
    rows["three tls"].pop("vs_plain_p50")
    add_security_cost(rows, setups)
    assert "vs_plain_p50" not in rows["three tls"]


@pytest.mark.kafka
@pytest.mark.redis
def test_bench_measures_every_setup_in_alternating_rounds(tmp_path: Path) -> None:
    """Each broker setup (a plain and a SASL/TLS broker here, Redis Streams beside) gets one
    row: the median of its rounds, the spread, the first round after the warm-up only."""
    require_tool("redis-server", "apt-get install redis-server")
    setups = (BrokerSetup("plain", 1), BrokerSetup("sasl-tls", 1, secure=True))
    out = tmp_path / "bench.json"
    report = bench_kafka(
        hop=HopSettings(20, 8, 16, 4, 4), pipeline=None, out=out, setups=setups, with_redis=True,
        rounds=2,
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
    pairs = zip(rows["sasl-tls"]["per_round"], rows["plain"]["per_round"], strict=True)
    ratios = [tls["p50_ms"] / plain["p50_ms"] for tls, plain in pairs]
    assert rows["sasl-tls"]["vs_plain_p50"] == pytest.approx(float(np.median(ratios)), abs=1e-3)


def test_bench_without_redis_server_skips_the_comparison_with_a_line(
    kafka: KafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server there (the broker runs already)
    report = bench_kafka(
        bootstrap=kafka.bootstrap, hop=HopSettings(20, 5, 10, 2, 2), pipeline=None,
        out=tmp_path / "b.json", with_redis=True, rounds=1,
    )  # fmt: skip
    assert list(report["results"]) == [kafka.bootstrap]  # Kafka measured, Redis not
    assert "Redis Streams skipped: redis-server not found" in capsys.readouterr().out


@pytest.mark.kafka
def test_the_bench_topic_keeps_a_bounded_log(tmp_path: Path) -> None:
    """On the bench's own clusters the bench topic's segments past its retention are deleted
    within seconds, so a warm-up of GBs does not grow the brokers' page cache by GBs."""
    retained = int(BENCH_TOPIC_CONFIG["retention.bytes"])
    segment = int(BENCH_TOPIC_CONFIG["segment.bytes"])
    with KafkaCluster(tmp_path, heap_mb=256, extra_properties=BENCH_BROKER_PROPERTIES) as cluster:
        topic = "bench-bounded"
        ensure_topics(cluster.bootstrap, [topic], partitions=1, config=BENCH_TOPIC_CONFIG)
        producer = new_producer(cluster.bootstrap)
        value = os.urandom(1024 * 1024)
        count = 2 * (retained + segment) // len(value)  # acknowledged: twice the bound written
        sends = [produce(producer, topic, None, value, []) for _ in range(count)]
        wait_delivered(producer, sends, timeout_s=120)
        partition = cluster.nodes[0].data_dir / f"{topic}-0"

        def log_bytes() -> int:  # ``.log.deleted`` too: gone from disk, not only renamed
            return sum(f.stat().st_size for f in partition.glob("*.log*"))

        # Kafka's defaults would look first after 30 s: the bench's clusters within seconds.
        poll_until(lambda: log_bytes() <= retained + segment, 15, what="old segments deleted")
