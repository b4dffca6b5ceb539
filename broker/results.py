"""Read a pipeline's results (and dead letters) back, each request once.

Delivery is at-least-once, so a result may arrive twice (a worker died after producing, before
committing). `ResultReader` drops repeats by (request id, crop index). It reads without a
consumer group: every reader sees every result. ``keep=False`` (``cvserve results --follow``)
remembers only the most recent ``dedup_window`` ids, not the results: a redelivered result
arrives within a few batches of the original, so memory stays bounded on an endless stream.
Every result read gets a ``results.ready`` hop (its poll began) and a ``results.consumed`` hop
(the poll returned it): the end of its last broker transit.

A request's results are complete when its first-stage result arrived and, if that result counts
crops sent on (``CROP_COUNT``, a fan-out stage), one result per crop too (`expected_results`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from cvserve.broker.clients import TopicPartition, consume_available, new_consumer, topic_partitions
from cvserve.broker.crops import CROP_COUNT
from cvserve.broker.routes import route
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
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits

READER = "results"  # the component name in a result reader's hop
READY_HOP, RECEIVED_HOP = hop_label(READER, READY), hop_label(READER, CONSUMED)
_MAX_RECORDS_PER_POLL = 1000
# Result ids a streaming reader remembers for de-duplication (~150 bytes each).
DEDUP_WINDOW = 100_000


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
        self._keys: dict[tuple[str, int], None] = {}  # insertion-ordered
        self.added = 0

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._keys

    def add(self, key: tuple[str, int]) -> None:
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
        self._consumer = new_consumer(bootstrap, limits=limits)
        try:
            partitions = topic_partitions(self._consumer, topic, bootstrap)
        except KeyError:
            self._consumer.close()
            raise KeyError(f"topic {topic} does not exist on {bootstrap}") from None
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        self._consumer.assign([TopicPartition(topic, p, start) for p in partitions])

    def poll(self, timeout_s: float = 0.5) -> list[Record]:
        """The records that arrived within ``timeout_s`` (in order within each partition)."""
        records = []
        for r in consume_available(self._consumer, _MAX_RECORDS_PER_POLL, timeout_s):
            if r.error() is None:
                records.append(Record.consumed(r))
        return records

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultReader:
    """The results of ``pipeline``, each (request id, crop index) once."""

    def __init__(
        self,
        bootstrap: str,
        pipeline: str,
        namespace: str | None = None,
        from_beginning: bool = True,
        keep: bool = True,
        limits: MessageLimits = LIMITS,
        dedup_window: int = DEDUP_WINDOW,
    ) -> None:
        topics = Topics(pipeline, namespace or default_namespace())
        ensure_topics(bootstrap, topics.all(route(pipeline).stage_names), limits=limits)
        self._reader = TopicReader(bootstrap, topics.results, from_beginning, limits)
        # Everything with ``keep`` (the results are kept anyway), else the recent ids.
        self.seen = RecentKeys(None if keep else dedup_window)
        # With ``keep``: every unique result read so far, by request id (what `collect` returns).
        self.keep = keep
        self.by_request: dict[str, list[Message]] = {}
        self.duplicates = 0
        self.malformed = 0

    def poll(self, timeout_s: float = 0.5) -> list[Message]:
        """New unique results that arrived within ``timeout_s``."""
        fresh = []
        ready_ns = time.time_ns()
        polled = self._reader.poll(timeout_s)
        received_ns = time.time_ns()
        for record in polled:
            try:
                message = Message.from_record(*record)
            except SchemaError:
                self.malformed += 1
                continue
            trace = message.trace.hop_not_before(READY_HOP, ready_ns).hop(RECEIVED_HOP, received_ns)
            message = replace(message, trace=trace)
            if message.dedup_key in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(message.dedup_key)
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
            raise ValueError("collect needs a ResultReader made with keep=True")
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

    def __enter__(self) -> ResultReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
