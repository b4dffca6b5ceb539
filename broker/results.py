"""Read a pipeline's results (and dead letters) back, each request once.

Delivery is at-least-once, so a result may arrive twice (a worker died after producing, before
committing; a producer that timed out wrote the same request again, at another offset).
`ResultReader` drops repeats by `Message.identity` — (request id, crop index, the SHA-256 of the
image the first stage read), so two different images sent under one id are both kept. It
reads without a consumer group: every reader sees every result. A record on the results topic
that is not a valid result (not schema v1, outputs that do not decode, a bad crop header, any
header bytes) is counted in ``malformed`` and handed to ``on_malformed`` with its reason — the
reader goes on. ``keep=False`` (``cvserve results --follow``)
remembers only the most recent ``dedup_window`` ids, not the results: a redelivered result
arrives within a few batches of the original, so memory stays bounded on an endless stream.
Every result read gets a ``results.ready`` hop (its poll began) and a ``results.consumed`` hop
(the poll returned it): the end of its last broker transit.

A request's results are complete when its first-stage result arrived and, if that result counts
crops sent on (``CROP_COUNT``, a fan-out stage), one result per crop too (`expected_results`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Protocol, Self, TypedDict, Unpack

from cvserve.broker.clients import TopicPartition, new_consumer, topic_partitions
from cvserve.broker.crops import CROP_COUNT
from cvserve.broker.polling import poll_records
from cvserve.broker.routes import Route, as_route
from cvserve.broker.schema import (
    CONSUMED,
    READY,
    Message,
    Record,
    SchemaError,
    decode_outputs,
    hop_label,
)
from cvserve.broker.topics import Topics, default_namespace, ensure_topics
from cvserve.deploy.kafka_limits import LIMITS, MIB, MessageLimits

READER = "results"  # the component name in a result reader's hop
READY_HOP, RECEIVED_HOP = hop_label(READER, READY), hop_label(READER, CONSUMED)
_MAX_RECORDS_PER_POLL = 1000
_MAX_BYTES_PER_POLL = 16 * MIB
# What a reader's consumer may hold fetched ahead (results are small; a hostile record is not).
_PREFETCH_KBYTES = 16 * 1024
# Result ids a streaming reader remembers for de-duplication (~250 bytes each).
DEDUP_WINDOW = 100_000
log = logging.getLogger(__name__)


def expected_results(results: Sequence[Message]) -> int | None:
    """How many results the request of ``results`` (those read so far) has in all: 1 + its
    ``CROP_COUNT`` for a fan-out pipeline, else 1; None while its first-stage result (the one
    that is no crop's) has not arrived."""
    for message in results:
        if message.crop is None:
            outputs = decode_outputs(message.value)
            return 1 + int(outputs[CROP_COUNT].reshape(-1)[0]) if CROP_COUNT in outputs else 1
    return None


def is_complete(results: Sequence[Message]) -> bool:
    """Whether ``results`` (unique, of one request) are all the request will get."""
    expected = expected_results(results)
    return expected is not None and len(results) >= expected


class RecentKeys:
    """A set that forgets its oldest keys beyond ``limit`` (None: never); ``added`` counts all."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._keys: dict[Hashable, None] = {}  # insertion-ordered
        self.added = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def add(self, key: Hashable) -> None:
        self._keys[key] = None
        self.added += 1
        if self.limit is not None and len(self._keys) > self.limit:
            del self._keys[next(iter(self._keys))]


class TopicReader:
    """Every partition of ``topic`` from the beginning (or the end), no consumer group."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        from_beginning: bool = True,
        limits: MessageLimits = LIMITS,
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

        self.topic = topic
        self._consumer = new_consumer(
            bootstrap, limits=limits, **{"queued.max.messages.kbytes": _PREFETCH_KBYTES}
        )
        try:
            partitions = topic_partitions(self._consumer, topic, bootstrap)
        except KeyError:
            self._consumer.close()
            raise KeyError(f"topic {topic} does not exist on {bootstrap}") from None
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        self._consumer.assign([TopicPartition(topic, p, start) for p in partitions])

    @staticmethod
    def record_memory_bytes(partitions: int, limits: MessageLimits = LIMITS) -> int:
        """The most memory records take in a reader of a topic of ``partitions``: librdkafka's
        queue (per partition the prefetch, overshot by one record) and one poll's records
        (``_MAX_BYTES_PER_POLL`` and the record that crossed it), held twice while converted."""
        queued = partitions * (_PREFETCH_KBYTES * 1024 + limits.max_message_bytes)
        return queued + 2 * (_MAX_BYTES_PER_POLL + limits.max_message_bytes)

    def poll(self, timeout_s: float = 0.5) -> list[Record]:
        """The records that arrived within ``timeout_s`` (in order within each partition)."""
        polled = poll_records(self._consumer, _MAX_RECORDS_PER_POLL, _MAX_BYTES_PER_POLL, timeout_s)
        return [p.record for p in polled]

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log_malformed(record: Record, reason: str) -> None:
    log.warning("not a result: %s: %s", record.source, reason)


class RecordSource(Protocol):
    """Where results are read from: a Kafka topic (`TopicReader`) or a Redis stream."""

    def poll(self, timeout_s: float) -> list[Record]: ...

    def close(self) -> None: ...


class ReadOptions(TypedDict, total=False):
    """`UniqueResults`' optional arguments, as every broker's reader passes them on."""

    keep: bool
    limits: MessageLimits
    dedup_window: int
    on_malformed: Callable[[Record, str], None]


class UniqueResults:
    """The results ``reader`` returns, each `Message.identity` once (whatever the broker)."""

    def __init__(
        self,
        reader: RecordSource,
        keep: bool = True,
        limits: MessageLimits = LIMITS,
        dedup_window: int = DEDUP_WINDOW,
        on_malformed: Callable[[Record, str], None] = log_malformed,
    ) -> None:
        self._reader = reader
        # Everything with ``keep`` (the results are kept anyway), else the recent ids.
        self.seen = RecentKeys(None if keep else dedup_window)
        # With ``keep``: every unique result read so far, by request id (what `collect` returns).
        self.keep = keep
        self.by_request: dict[str, list[Message]] = {}
        self.duplicates = 0
        self.malformed = 0
        self.limits = limits
        self.on_malformed = on_malformed

    def poll(self, timeout_s: float = 0.5) -> list[Message]:
        """New unique results that arrived within ``timeout_s``."""
        fresh = []
        ready_ns = time.time_ns()
        polled = self._reader.poll(timeout_s)
        received_ns = time.time_ns()
        for record in polled:
            try:
                message = Message.from_record(record, self.limits)
                if not message.is_result:
                    raise SchemaError(
                        f"header content-type: {message.content_type!r}, not a result"
                    )
                decode_outputs(message.value)
            except SchemaError as exc:
                self.malformed += 1
                self.on_malformed(record, str(exc))
                continue
            trace = message.trace.hop_not_before(READY_HOP, ready_ns).hop(RECEIVED_HOP, received_ns)
            message = replace(message, trace=trace)
            if message.identity in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(message.identity)
            if self.keep:
                self.by_request.setdefault(message.request_id, []).append(message)
            fresh.append(message)
        return fresh

    def follow(
        self, stop: threading.Event | None = None, idle_timeout_s: float | None = None
    ) -> Iterator[Message]:
        """Unique results as they come, until ``stop`` is set or nothing new arrived for
        ``idle_timeout_s``."""
        last = time.monotonic()
        while stop is None or not stop.is_set():
            batch = self.poll()
            if batch:
                last = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                return
            yield from batch

    def collect(self, request_ids: Iterable[str], timeout_s: float) -> dict[str, list[Message]]:
        """Results of ``request_ids`` (a list per request: one, or one per crop), including those
        read earlier, once each has at least one; raises `TimeoutError` naming how many are
        missing after ``timeout_s``. Needs ``keep``."""
        if not self.keep:
            raise ValueError(f"collect needs a {type(self).__name__} made with keep=True")
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout_s
        while not wanted <= self.by_request.keys() and time.monotonic() < deadline:
            self.poll()
        missing = wanted - self.by_request.keys()
        if missing:
            raise TimeoutError(
                f"{len(missing)} of {len(wanted)} request(s) have no result after {timeout_s:.0f} s"
            )
        return {request_id: self.by_request[request_id] for request_id in wanted}

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultReader(UniqueResults):
    """The results of ``pipeline`` (a `Route`, or the name of a pipeline served as one ensemble)
    on the Kafka broker at ``bootstrap``, each `Message.identity` once."""

    def __init__(
        self,
        bootstrap: str,
        pipeline: Route | str,
        namespace: str | None = None,
        from_beginning: bool = True,
        **options: Unpack[ReadOptions],
    ) -> None:
        limits = options.get("limits", LIMITS)
        pipeline_route = as_route(pipeline)
        topics = Topics(pipeline_route.pipeline, namespace or default_namespace())
        ensure_topics(bootstrap, topics.all(pipeline_route.stage_names), limits=limits)
        reader = TopicReader(bootstrap, topics.results, from_beginning, limits)
        super().__init__(reader, **options)


def read_dead_letters(
    bootstrap: str,
    pipeline: str,
    count: int,
    timeout_s: float,
    namespace: str | None = None,
) -> list[Record]:
    """The first ``count`` dead-letter records of ``pipeline`` (``TimeoutError`` if fewer come)."""
    topic = Topics(pipeline, namespace or default_namespace()).dead_letter
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    with TopicReader(bootstrap, topic) as reader:
        while len(records) < count and time.monotonic() < deadline:
            records += reader.poll()
    if len(records) < count:
        raise TimeoutError(f"{len(records)} of {count} dead letters after {timeout_s:.0f} s")
    return records
