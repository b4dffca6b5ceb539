"""A Redis stage worker process drives the stage step over Redis Streams: what the step
dead-letters is acknowledged, what waits for Triton stays pending (a real redis-server, no
Triton: the worker is pointed at a closed port)."""

from __future__ import annotations

import pytest
from broker_testing import PIPELINE, small_jpegs, wait_until

from cvserve.broker.redis_results import read_redis_dead_letters
from cvserve.broker.redis_streams import RedisImageProducer, redis_client
from cvserve.broker.schema import Header, decode_headers
from cvserve.broker.topics import Topics
from cvserve.deploy.redis import RedisServer

pytestmark = pytest.mark.redis

NO_TRITON = "127.0.0.1:1"  # nothing listens: every call is "Triton unavailable"


@pytest.fixture
def stream_and_group(namespace: str) -> tuple[str, str]:
    """The stage's input stream and its workers' group."""
    topics = Topics(PIPELINE, namespace)
    return topics.stage_in(PIPELINE), topics.group(PIPELINE)


def test_poison_is_dead_lettered_and_acknowledged_while_triton_is_down(
    redis_server: RedisServer, start_redis_worker, namespace: str, stream_and_group
) -> None:
    worker = start_redis_worker(NO_TRITON)
    stream, group = stream_and_group
    client = redis_client(redis_server.url)
    entry_id = client.xadd(stream, {b"value": b"plain text", b"key": b"cam3"}).decode()

    (letter,) = read_redis_dead_letters(redis_server.url, PIPELINE, 1, 60, namespace)
    headers = decode_headers(letter.headers)
    assert "not a recognised image" in headers[Header.ERROR]
    assert headers[Header.SOURCE] == f"{stream}@{entry_id}"
    stats = worker.wait_stats(lambda s: s.committed_batches >= 1, 30, "the batch acknowledged")
    assert stats.dead_lettered == 1 and stats.results == 0 and stats.retries == 0
    assert client.xpending(stream, group)["pending"] == 0


def test_an_image_waits_for_triton_unacknowledged_and_a_stop_leaves_it_pending(
    redis_server: RedisServer, start_redis_worker, namespace: str, stream_and_group
) -> None:
    worker = start_redis_worker(NO_TRITON)
    stream, group = stream_and_group
    with RedisImageProducer(redis_server.url, PIPELINE, namespace) as producer:
        producer.submit(small_jpegs(1, first_seed=700))

    worker.wait_stats(lambda s: s.state == "retrying", 60, "retrying while Triton is down")
    client = redis_client(redis_server.url)
    assert client.xpending(stream, group)["pending"] == 1
    assert worker.stop() == 0  # the batch is abandoned, the worker exits cleanly
    stats = worker.stats()
    assert stats is not None and stats.state == "stopped" and stats.committed_batches == 0
    # Still pending: another worker claims it after the claim idle time.
    wait_until(lambda: client.xpending(stream, group)["pending"] == 1, 5, "the entry pending")
