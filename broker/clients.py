"""cvserve's Kafka clients: librdkafka producers, consumers and admin clients (confluent-kafka).

Every client is made here, so that all share the settings cvserve promises: record sizes from
`MessageLimits`, acks=all from an idempotent producer sending at once (``linger.ms=0``), manual
commits only, the security settings of `deploy.kafka_client_config.client_security` (SASL, TLS),
and librdkafka's log lines in Python logging (``cvserve.kafka``) instead of stderr.
librdkafka rather than a pure-Python client because a hop is a latency budget: on loopback a
150 KB hop takes p50 1.3–1.4 ms with librdkafka and 2.9 ms with kafka-python, which spends ~1.5 ms
parsing and checksumming each record in Python (`cvserve bench kafka`, README).

Deliveries are reported by callbacks that only run inside ``poll``/``flush``: `produce` returns a
`concurrent.futures.Future` that `wait_delivered` resolves.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cvserve.deploy.kafka_client_config import client_security
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits

T = TypeVar("T")
LOG = logging.getLogger("cvserve.kafka")
# A library logs, the application decides: without a logging setup librdkafka's transient
# warnings (e.g. "coordinator load in progress" on a fresh broker) are not printed.
LOG.addHandler(logging.NullHandler())
# Rides out a broker restart: a record is retried until this much time has passed.
DELIVERY_TIMEOUT_MS = 120_000
_QUEUE_FULL_POLL_S = 0.05
# See `retry_while_leadership_moves`.
_LEADERSHIP_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
    # A group coordinator that a fresh broker is still loading, or that moved.
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
}


# Answers about one record itself (its size, its contents): sending it again never helps.
_RECORD_REFUSED = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError._BAD_MSG,
    KafkaError._INVALID_ARG,
}


class DeliveryError(RuntimeError):
    """The broker did not acknowledge a record; ``fatal`` means the producer must be replaced,
    ``refused`` that this record will never be taken (too large, invalid), unlike a broker away."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(f"not acknowledged: {error.str()} ({error.name()})")
        self.fatal = error.fatal()
        self.refused = error.code() in _RECORD_REFUSED


class BrokerUnreachable(ConnectionError):
    """No broker answered a metadata request in time."""


class BrokerRefused(BrokerUnreachable):
    """A broker answered but refused this client (authentication, TLS, protocol): trying again
    with the same settings never helps; the message says which setting to fix."""


_CONFIG_HINT = "(set in $CVSERVE_KAFKA_CLIENT_CONFIG's file or CVSERVE_KAFKA_<SETTING> variables)"


def refusal_reason(error: KafkaError) -> str | None:
    """What a client-level librdkafka error says about this client's security settings, in
    words naming the setting to fix; None for errors a retry may cure (a broker away)."""
    text = error.str()
    if error.code() == KafkaError._AUTHENTICATION or "SASL authentication" in text:
        return f"authentication failed: check sasl.username / sasl.password {_CONFIG_HINT} [{text}]"
    tls_refused = "SSL handshake failed" in text or ("alert" in text and "certificate" in text)
    if error.code() == KafkaError._SSL or tls_refused:
        return (
            "TLS handshake failed: set ssl.ca.location to the CA that signed the broker's "
            "certificate (and ssl.certificate.location / ssl.key.location where the cluster "
            f"requires mutual TLS) {_CONFIG_HINT} [{text}]"
        )
    if "security.protocol" in text:
        return (
            "the broker speaks another protocol than this client: set security.protocol "
            f"(e.g. SASL_SSL) and its credentials {_CONFIG_HINT} [{text}]"
        )
    return None


_CLOSED_AT_HELLO = "state APIVERSION_QUERY"


class _LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def check_connection(bootstrap: str, timeout_s: float = 15.0) -> int:
    """How many brokers the cluster at ``bootstrap`` has, asked with cvserve's client settings.

    Raises `BrokerRefused` as soon as a broker refuses this client (credentials, CA, protocol),
    `BrokerUnreachable` when none answers within ``timeout_s``: one line a CLI can print.
    """
    errors: list[KafkaError] = []
    # A client speaking PLAINTEXT to a TLS listener gets no error event, only a log line.
    lines = _LogLines()
    logger = logging.Logger("cvserve.kafka.check")
    logger.addHandler(lines)
    settings = client_base(bootstrap)
    admin = AdminClient({**settings, "logger": logger, "error_cb": errors.append})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return len(admin.list_topics(timeout=min(1.0, timeout_s)).brokers)
        except KafkaException as exc:
            last = exc.args[0].str() if exc.args else str(exc)
        admin.poll(0)  # serves error_cb
        # librdkafka's hint, or a connection closed while asking the API versions: a TLS
        # listener hanging up on a client that does not speak TLS.
        protocol = [
            f"{line} (security.protocol {settings.get('security.protocol', 'PLAINTEXT')})"
            for line in lines.messages
            if "security.protocol" in line
            or ("SSL" not in settings.get("security.protocol", "") and _CLOSED_AT_HELLO in line)
        ]
        for error in [*errors, *(KafkaError(KafkaError._TRANSPORT, line) for line in protocol)]:
            reason = refusal_reason(error)
            if reason:
                raise BrokerRefused(f"Kafka at {bootstrap} refused cvserve's client: {reason}")
        if time.monotonic() >= deadline:
            raise BrokerUnreachable(
                f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f} s ({last}): "
                "is it running, and is the address right?"
            )


def cluster_topics(
    client: Consumer | AdminClient,
    bootstrap: str,
    topic: str | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Topic metadata by name (one topic, or all): `BrokerUnreachable` naming ``bootstrap`` if no
    broker answers within ``timeout_s``."""
    try:
        return client.list_topics(topic, timeout=timeout_s).topics
    except KafkaException as exc:
        raise BrokerUnreachable(
            f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f} s "
            f"({exc.args[0].str() if exc.args else exc})"
        ) from exc


def producer_config(limits: MessageLimits = LIMITS) -> dict[str, Any]:
    """The settings of every cvserve producer (submit, stage workers, benchmarks)."""
    return {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 0,
        "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
        **limits.producer_config(),
    }


def consumer_config(limits: MessageLimits = LIMITS) -> dict[str, Any]:
    """The settings of every cvserve consumer: offsets are committed by the code, never auto."""
    return {
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        **limits.consumer_config(),
    }


def client_base(bootstrap: str) -> dict[str, Any]:
    """What every client's config starts with: the address, the logger, the security settings."""
    return {"bootstrap.servers": bootstrap, "logger": LOG, **client_security()}


def new_producer(bootstrap: str, limits: MessageLimits = LIMITS, **overrides: Any) -> Producer:
    return Producer({**client_base(bootstrap), **producer_config(limits), **overrides})


def new_consumer(
    bootstrap: str, group: str | None = None, limits: MessageLimits = LIMITS, **overrides: Any
) -> Consumer:
    """A consumer in ``group``; without one, a private group of its own that never commits (a
    reader that `assign`s partitions itself)."""
    return Consumer(
        {
            **client_base(bootstrap),
            "group.id": group or f"cvserve-reader-{uuid.uuid4().hex}",
            **consumer_config(limits),
            **overrides,
        }
    )


def new_admin(bootstrap: str, **overrides: Any) -> AdminClient:
    return AdminClient({**client_base(bootstrap), **overrides})


def produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    headers: Sequence[tuple[str, bytes]],
) -> Future[None]:
    """Queue one record; the future is done once the broker acknowledged it (`DeliveryError`
    if it did not, also for a record librdkafka refuses at once, e.g. too large: never raises).
    Waits (serving callbacks) while librdkafka's queue is full."""
    future: Future[None] = Future()

    def delivered(error: KafkaError | None, _message: Any) -> None:
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(DeliveryError(error))

    while True:
        try:
            producer.produce(topic, value, key, headers=list(headers), on_delivery=delivered)
            return future
        except BufferError:
            producer.poll(_QUEUE_FULL_POLL_S)
        except KafkaException as exc:
            future.set_exception(DeliveryError(exc.args[0]))
            return future


def wait_delivered(
    producer: Producer, futures: Sequence[Future[None]], timeout_s: float | None = None
) -> None:
    """Serve callbacks until every future is done; raises the first `DeliveryError`, or
    `TimeoutError` after ``timeout_s``."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not all(f.done() for f in futures):
        left = 1.0 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            pending = sum(not f.done() for f in futures)
            raise TimeoutError(f"{pending} record(s) not acknowledged after {timeout_s} s")
        producer.poll(min(left, 1.0))
    for future in futures:
        future.result()


def consume_available(consumer: Consumer, max_records: int, timeout_s: float) -> list[Any]:
    """Up to ``max_records`` records (and error events): waits at most ``timeout_s`` for the
    first, then takes only what has already arrived. (``Consumer.consume(n, t)`` alone would wait
    the whole ``t`` for ``n`` records to arrive.)"""
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]


def retry_while_leadership_moves(call: Callable[[], T], timeout_s: float = 30.0) -> T:
    """``call()``, again while it fails with what a just-created or just-moved partition (or
    group coordinator) answers until its leader serves it (librdkafka retries those inside
    produce/consume, not here)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            transient = error.retriable() or error.code() in _LEADERSHIP_MOVING
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # retry interval of a transient broker answer; the deadline bounds it


def end_offsets(
    consumer: Consumer, topic: str, bootstrap: str = "", timeout_s: float = 30.0
) -> dict[int, int]:
    """The end offset of every partition of ``topic`` (a fresh topic's are retried)."""
    return {
        partition: retry_while_leadership_moves(
            lambda p=partition: consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout_s
            )[1],
            timeout_s,
        )
        for partition in topic_partitions(consumer, topic, bootstrap, timeout_s)
    }


def topic_partitions(
    client: Consumer | AdminClient, topic: str, bootstrap: str = "", timeout_s: float = 10.0
) -> list[int]:
    """The partition ids of ``topic``; `KeyError` if it does not exist."""
    metadata = cluster_topics(client, bootstrap, topic, timeout_s).get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise KeyError(f"topic {topic} does not exist")
    return sorted(metadata.partitions)


__all__ = [
    "BrokerRefused",
    "BrokerUnreachable",
    "Consumer",
    "DeliveryError",
    "KafkaError",
    "KafkaException",
    "Producer",
    "TopicPartition",
    "check_connection",
    "cluster_topics",
    "consume_available",
    "end_offsets",
    "new_admin",
    "new_consumer",
    "new_producer",
    "produce",
    "retry_while_leadership_moves",
    "topic_partitions",
    "wait_delivered",
]
