"""A Kafka stage worker process drives the stage step over Kafka: what the step dead-letters is
committed, what waits for Triton is not (a real broker, no Triton: the worker is pointed at a
closed port)."""

from __future__ import annotations

import pytest
from broker_testing import PIPELINE, RawProducer, small_jpegs

from cvserve.broker.lag import pipeline_lag
from cvserve.broker.producer import ImageProducer
from cvserve.broker.results import read_dead_letters
from cvserve.broker.schema import Header, decode_headers
from cvserve.broker.topics import Topics
from cvserve.deploy.kafka import KafkaBroker

pytestmark = pytest.mark.kafka

NO_TRITON = "127.0.0.1:1"  # nothing listens: every call is "Triton unavailable"


def test_poison_is_dead_lettered_and_committed_while_triton_is_down(
    kafka: KafkaBroker, start_worker, namespace: str
) -> None:
    worker = start_worker(NO_TRITON)
    worker.wait_stats(lambda s: s.state == "running", 120, "consuming")
    topic = Topics(PIPELINE, namespace).stage_in(PIPELINE)
    source = RawProducer(kafka.bootstrap).send(topic, b"cam3", b"plain text")

    (letter,) = read_dead_letters(kafka.bootstrap, PIPELINE, 1, 60, namespace)
    headers = decode_headers(letter.headers)
    assert "not a recognised image" in headers[Header.ERROR]
    assert headers[Header.SOURCE] == source
    stats = worker.wait_stats(lambda s: s.committed_batches >= 1, 30, "the batch committed")
    assert stats.dead_lettered == 1 and stats.results == 0 and stats.retries == 0
    assert sum(row.lag for row in pipeline_lag(kafka.bootstrap, PIPELINE, namespace)) == 0


def test_an_image_waits_for_triton_uncommitted_and_a_stop_leaves_it_to_the_group(
    kafka: KafkaBroker, start_worker, namespace: str
) -> None:
    worker = start_worker(NO_TRITON)
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        producer.submit(small_jpegs(1, first_seed=710))
        producer.flush(60)

    worker.wait_stats(lambda s: s.state == "retrying", 120, "retrying while Triton is down")
    assert worker.stop() == 0  # the batch is abandoned, the worker exits cleanly
    stats = worker.stats()
    assert stats is not None and stats.state == "stopped" and stats.committed_batches == 0
    assert sum(row.lag for row in pipeline_lag(kafka.bootstrap, PIPELINE, namespace)) == 1
