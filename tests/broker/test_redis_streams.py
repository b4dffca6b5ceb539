"""Redis Streams as the broker between stages: a real redis-server (loopback) and, for the
worker tests, the session's real Triton serving ``classify``.

Workers run as subprocesses (``python -m cvserve.pipelines.app.redis_commands worker``) so that
SIGKILL is real; each test has its own stream namespace.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from broker_testing import PIPELINE, small_jpegs, wait_until

from cvserve.broker.redis_results import RedisResultReader, read_redis_dead_letters
from cvserve.broker.redis_streams import (
    RedisImageProducer,
    record_fields,
    record_of,
    redis_client,
)
from cvserve.broker.schema import Header, Message, Record, decode_headers, decode_outputs
from cvserve.broker.topics import Topics
from cvserve.deploy.redis import RedisServer, RedisStartError, redis_server_binary
from cvserve.pipelines.app.cli import main as cli_main
from cvserve.profiling.bench.hop_records import HopSettings
from cvserve.profiling.bench.redis_hop import measure_redis

pytestmark = [pytest.mark.redis]


def test_a_record_round_trips_through_stream_entry_fields() -> None:
    record = Message(
        "r1", PIPELINE, PIPELINE, b"\xff\xd8jpeg", "image/jpeg", key="cam1"
    ).to_record()
    fields = record_fields(record)
    assert fields[b"value"] == b"\xff\xd8jpeg" and fields[b"key"] == b"cam1"
    assert fields[b"h:request-id"] == b"r1"
    read = record_of("s", b"1-0", {**fields, b"other": b"ignored"})
    assert read == record._replace(source="s@1-0")
    assert Message.from_record(read).request_id == "r1"
    bare = record_of("s", "2-0", {b"value": b"only"})  # another producer's entry
    assert bare == Record(None, b"only", [], "s@2-0")


def test_no_redis_server_is_one_line_naming_the_package(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RedisStartError, match="redis-server not found on PATH: apt-get install"):
        redis_server_binary()


def test_redis_hop_measures_the_keys_of_the_kafka_hop(redis_server: RedisServer) -> None:
    row = measure_redis(redis_server.url, HopSettings(20, 20, 20, 5, 5))
    assert set(row) == {
        "message_bytes_mean", "warmup_messages", "warmup_p50_ms", "warmup_window_p50_ms",
        "warmup_steady", "latency_messages", "p50_ms",
        "p99_ms", "max_ms", "produce_ack_p50_ms", "throughput_messages", "msgs_per_s",
        "mb_per_s", "produce_acked_msgs_per_s",
    }  # fmt: skip
    assert 0 < row["p50_ms"] <= row["p99_ms"] and row["msgs_per_s"] > 0


def test_bench_redis_cli_bounds_the_warm_up(redis_server: RedisServer, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert cli_main([
        "bench", "redis", "--redis-url", redis_server.url, "--size-kb", "20",
        "--latency-messages", "8", "--throughput-messages", "8", "--warmup-messages", "3",
        "--warmup-max-messages", "7",
        "--pipeline", "none", "--out", str(out),
    ]) == 0  # fmt: skip
    (row,) = json.loads(out.read_text())["hops"].values()
    assert row["warmup_messages"] == 7  # one window, cut at the bound: never six to be steady


@pytest.mark.server
def test_every_image_gets_one_result_over_redis_streams(
    redis_server: RedisServer, triton_url, start_redis_worker, namespace
) -> None:
    worker = start_redis_worker(triton_url)
    images = small_jpegs(10, first_seed=300)
    with RedisImageProducer(redis_server.url, PIPELINE, namespace) as producer:
        ids = producer.submit(images)
    with RedisResultReader(redis_server.url, PIPELINE, namespace) as reader:
        results = reader.collect(ids, timeout_s=90)
    assert sorted(results) == sorted(ids)
    stream = Topics(PIPELINE, namespace).stage_in(PIPELINE)
    for (result,) in results.values():
        assert decode_outputs(result.value)["LABELS"].shape == (5,)
        assert result.origin.startswith(f"{stream}@")  # where the first stage read it
        assert [hop.label for hop in result.trace.hops] == [
            "submit", "classify.ready", "classify.consumed", "classify.dispatched",
            "classify.answered", "classify.emitting", "classify.produced", "results.ready",
            "results.consumed",
        ]  # fmt: skip
    stats = worker.wait_stats(lambda s: s.results == len(ids), 30, "results counted")
    assert stats.consumed == len(ids) and stats.dead_lettered == 0
    group = Topics(PIPELINE, namespace).group(PIPELINE)
    assert redis_client(redis_server.url).xpending(stream, group)["pending"] == 0  # all acked


def pending_of(url: str, stream: str, group: str) -> dict[str, int]:
    """Unacknowledged entries per consumer of ``group``."""
    consumers = redis_client(url).xinfo_consumers(stream, group)
    return {c["name"].decode(): c["pending"] for c in consumers}


@pytest.mark.server
def test_a_sigkilled_workers_pending_entries_are_claimed_by_another_and_none_is_lost(
    redis_server: RedisServer, triton_url, start_redis_worker, namespace
) -> None:
    topics = Topics(PIPELINE, namespace)
    stream, group, batch = topics.stage_in(PIPELINE), topics.group(PIPELINE), 4
    options = ("--batch-size", str(batch), "--max-in-flight", "1", "--claim-idle-ms", "1500")
    victim = start_redis_worker(triton_url, *options)
    victim.wait_stats(lambda s: s.state == "running", 60, "reading its group")
    with RedisImageProducer(redis_server.url, PIPELINE, namespace) as producer:
        ids = producer.submit(small_jpegs(40, first_seed=400))

    def holding_a_batch() -> bool:  # killed with a batch in hand: it never acknowledges it
        return any(n >= batch for n in pending_of(redis_server.url, stream, group).values())

    wait_until(holding_a_batch, 60, "the worker holding a batch")
    victim.signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    (held,) = pending_of(redis_server.url, stream, group).values()
    assert held >= batch

    survivor = start_redis_worker(triton_url, *options)
    with RedisResultReader(redis_server.url, PIPELINE, namespace) as reader:
        reader.collect(ids, timeout_s=120)
    assert reader.seen.added == len(ids)  # 0 lost; duplicates (if any) dropped
    stats = survivor.wait_stats(
        lambda s: s.claimed >= held, 30, "the dead worker's entries claimed"
    )
    assert survivor.process.poll() is None and stats.claimed == held
    assert redis_client(redis_server.url).xpending(stream, group)["pending"] == 0


@pytest.mark.server
def test_a_non_image_entry_goes_to_the_dead_letter_stream_with_the_reason(
    redis_server: RedisServer, triton_url, start_redis_worker, namespace
) -> None:
    worker = start_redis_worker(triton_url)
    stream = Topics(PIPELINE, namespace).stage_in(PIPELINE)
    client = redis_client(redis_server.url)
    entry_id = client.xadd(stream, {b"value": b"hello, not an image", b"key": b"cam7"}).decode()
    with RedisImageProducer(redis_server.url, PIPELINE, namespace) as producer:
        ids = producer.submit(small_jpegs(2, first_seed=500))  # the worker keeps going

    (letter,) = read_redis_dead_letters(redis_server.url, PIPELINE, 1, 60, namespace)
    headers = decode_headers(letter.headers)
    assert "not a recognised image (first bytes b'hello" in headers[Header.ERROR]
    assert headers[Header.ERROR_STAGE] == PIPELINE
    assert headers[Header.SOURCE] == f"{stream}@{entry_id}"
    assert (letter.key, letter.value) == (b"cam7", b"hello, not an image")  # kept as received
    with RedisResultReader(redis_server.url, PIPELINE, namespace) as reader:
        assert len(reader.collect(ids, timeout_s=60)) == len(ids)
    stats = worker.wait_stats(lambda s: s.results == len(ids), 30, "results counted")
    assert stats.dead_lettered == 1 and worker.process.poll() is None
