"""Size limits, topic names and submit's path expansion, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvserve.broker.clients import (
    BrokerUnreachable,
    consumer_config,
    new_consumer,
    new_producer,
    producer_config,
)
from cvserve.broker.producer import MessageTooLarge, check_size
from cvserve.broker.results import RecentKeys
from cvserve.broker.topics import Topics, ensure_topics
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits
from cvserve.pipelines.app.kafka_commands import expand_paths
from cvserve.pipelines.app.pipeline_args import catalog_route
from cvserve.pipelines.catalog import COMPOSITES


def test_broker_topic_producer_and_consumer_limits_agree() -> None:
    broker = KafkaBroker(Path("/nonexistent"), port=1, controller_port=2).properties()
    assert int(broker["message.max.bytes"]) == LIMITS.max_message_bytes
    assert int(broker["replica.fetch.max.bytes"]) >= LIMITS.max_message_bytes
    assert int(LIMITS.topic_config()["max.message.bytes"]) == LIMITS.max_message_bytes
    assert producer_config()["message.max.bytes"] == LIMITS.max_message_bytes
    consumer = consumer_config()
    assert consumer["fetch.message.max.bytes"] >= LIMITS.max_message_bytes
    assert consumer["fetch.max.bytes"] >= consumer["fetch.message.max.bytes"]
    # librdkafka refuses a consumer whose receive buffer cannot hold a whole fetch response.
    assert consumer["receive.message.max.bytes"] >= consumer["fetch.max.bytes"] + 512
    assert consumer["enable.auto.commit"] is False
    assert LIMITS.max_value_bytes < LIMITS.max_message_bytes


def test_librdkafka_accepts_every_client_config() -> None:
    """librdkafka checks names and ranges when a client is made (no broker needed)."""
    new_producer("127.0.0.1:1")
    new_consumer("127.0.0.1:1").close()


def test_oversized_image_is_refused_with_the_limit_in_the_message() -> None:
    limits = MessageLimits(max_message_bytes=2000, record_overhead_bytes=500)
    check_size(b"x" * 1500, limits)
    with pytest.raises(MessageTooLarge, match=r"photo.jpg: 1,501 bytes exceeds the limit of 1,500"):
        check_size(b"x" * 1501, limits, what="photo.jpg")


def test_topic_and_group_names_derive_from_pipeline_and_stage() -> None:
    topics = Topics("detect_identify")
    assert topics.stage_in("detect") == "cvserve.detect_identify.detect.in"
    assert topics.results == "cvserve.detect_identify.results"
    assert topics.dead_letter == "cvserve.detect_identify.dead-letter"
    assert topics.group("identify") == "cvserve.detect_identify.identify"
    assert Topics("classify", "staging").all(["classify"]) == [
        "staging.classify.classify.in",
        "staging.classify.results",
        "staging.classify.dead-letter",
    ]


def test_a_single_ensemble_pipeline_is_one_stage_named_like_it() -> None:
    classify = catalog_route("classify")
    assert classify.stage_names == ["classify"] and classify.first.ensemble == "classify"
    with pytest.raises(KeyError, match="no broker stage 'detect'"):
        classify.stage("detect")


def test_submit_expands_files_folders_and_globs(tmp_path: Path) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    files = [tmp_path / "a" / "1.jpg", tmp_path / "a" / "deep" / "2.png", tmp_path / "b.jpg"]
    for f in files:
        f.write_bytes(b"x")
    (tmp_path / "c.txt").write_bytes(b"x")
    found = expand_paths([str(tmp_path / "a"), str(tmp_path / "*.jpg"), str(files[0])])
    assert found == files
    with pytest.raises(SystemExit, match="no such file"):
        expand_paths([str(tmp_path / "missing.jpg")])


def test_a_streaming_reader_remembers_only_recent_result_ids() -> None:
    seen = RecentKeys(limit=3)
    for n in range(5):
        seen.add((f"r{n}", 0))
    assert seen.added == 5
    assert ("r0", 0) not in seen and ("r1", 0) not in seen
    assert all((f"r{n}", 0) in seen for n in (2, 3, 4))
    unbounded = RecentKeys()
    for n in range(5):
        unbounded.add((f"r{n}", -1))
    assert ("r0", -1) in unbounded


def test_no_broker_is_a_clear_connection_error_naming_the_address() -> None:
    from cvserve.deploy.ports import free_port

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnreachable, match=f"no Kafka broker answered at {address}"):
        ensure_topics(address, ["t"], timeout_s=1.0)
    assert issubclass(BrokerUnreachable, ConnectionError)  # the CLIs print it without a traceback


def test_leadership_moves_are_retried_other_errors_raised() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from cvserve.broker.clients import retry_while_leadership_moves

    answers = [KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, None]

    def call() -> str:
        code = answers.pop(0)
        if code is not None:
            raise KafkaException(KafkaError(code))
        return "ends"

    assert retry_while_leadership_moves(call, timeout_s=10) == "ends" and answers == []

    def denied() -> None:
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    with pytest.raises(KafkaException, match="TOPIC_AUTHORIZATION_FAILED"):
        retry_while_leadership_moves(denied, timeout_s=10)


def test_composite_routes_come_from_the_catalogs_composite_spec() -> None:
    for name, composite in COMPOSITES.items():
        composite_route = catalog_route(name)
        assert composite_route.pipeline == name
        assert tuple(composite_route.stage_names) == composite.parts
        assert [s.ensemble for s in composite_route.stages] == list(composite.parts)
        topics = Topics(name, "ns").all(composite_route.stage_names)
        assert topics == [
            *(f"ns.{name}.{part}.in" for part in composite.parts),
            f"ns.{name}.results",
            f"ns.{name}.dead-letter",
        ]
