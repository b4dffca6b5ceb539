"""`StageWorker`: consume a stage's topic, call its Triton ensemble, produce what it emits.

Delivery is at-least-once. Per polled batch (at most ``batch_size`` records):

1. each record is parsed and checked (schema, addressed stage, size, image header); a poison
   record is bound for the dead-letter topic with its reason;
2. the others go to Triton, at most ``max_in_flight`` requests at once, each with the message's
   `Message.call_id` as its request id, between a ``<stage>.dispatched`` and a
   ``<stage>.answered`` hop (consumed → dispatched is the wait for a free call; the time the
   message waited for this worker to poll ends at ``<stage>.ready``). Triton unreachable →
   wait with exponential backoff and try again, forever; an input the server refuses
   (``PreprocessError``) → dead letter; any other server error → dead letter after
   ``server_error_attempts`` tries;
3. the outputs (results, crops for a later stage, dead letters) are made (``<stage>.emitting``,
   once the whole batch was answered) and sent in record order, and
   the batch's offsets are committed only once the broker acknowledged every one of them.

So a slow stage grows its topic's lag, never its memory: one batch in hand, at most
``prefetch_kbytes`` fetched ahead and one fetch of at most a record's size on its way (tested
with 120 MB of lag). A stop request (SIGTERM) lets the batch in hand finish and commit; if
Triton is down at that moment (or the broker does not acknowledge the outputs within
``stop_grace_s``), the batch is abandoned uncommitted and the group redelivers it. Per-key
order holds: a key lives in one partition, handled in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cvserve.broker.clients import (
    Consumer,
    DeliveryError,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
    consume_available,
    new_consumer,
    new_producer,
    produce,
)
from cvserve.broker.ensemble import EnsembleCaller, InputRejected, TritonUnavailable
from cvserve.broker.producer import check_size
from cvserve.broker.routes import Route
from cvserve.broker.schema import (
    ANSWERED,
    CONSUMED,
    DISPATCHED,
    EMITTING,
    PRODUCED,
    READY,
    Message,
    Record,
    SchemaError,
    dead_letter_record,
    hop_label,
)
from cvserve.broker.stats import WorkerStats
from cvserve.broker.topics import Topics, default_namespace, ensure_topics
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits
from cvserve.preprocess.sniff import sniff

log = logging.getLogger(__name__)
_MAX_REASON_CHARS = 2000


@dataclass(frozen=True)
class WorkerConfig:
    """Knobs of one stage worker (backpressure, group timing, retries)."""

    batch_size: int = 16  # records per poll
    max_in_flight: int = 4  # Triton requests at once
    # What librdkafka may hold fetched ahead of the worker; with one fetch of at most a record's
    # limit on its way, this bounds the worker's memory however large its lag grows.
    prefetch_kbytes: int = 8 * 1024
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    poll_timeout_ms: int = 500
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    server_error_attempts: int = 3
    # After a stop request, how long to keep waiting for the broker to acknowledge outputs.
    stop_grace_s: float = 10.0


class BatchAbandoned(RuntimeError):
    """Stop was requested while Triton could not answer: nothing of the batch is committed."""


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge every output of a batch; ``fatal``: the producer is
    unusable (librdkafka's idempotence state broke) and must be replaced."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass
class _Work:
    """One consumed record and what became of it."""

    tp: tuple[str, int]  # topic, partition
    offset: int
    record: Record
    ready_ns: int  # wall clock: when the poll that returned it began
    message: Message | None = None
    outputs: Mapping[str, np.ndarray] | None = None
    error: str = ""  # set: goes to the dead-letter topic


class StageWorker:
    """One member of the consumer group of ``stage`` of ``route``."""

    def __init__(
        self,
        bootstrap: str,
        route: Route,
        stage: str,
        triton_url: str,
        config: WorkerConfig | None = None,
        namespace: str | None = None,
        stats_path: Path | None = None,
        limits: MessageLimits = LIMITS,
    ) -> None:
        self.bootstrap = bootstrap
        self.route = route
        self.stage = route.stage(stage)
        self.config = config or WorkerConfig()
        self.limits = limits
        self.topics = Topics(route.pipeline, namespace or default_namespace())
        self.topic = self.topics.stage_in(self.stage.name)
        self.group = self.topics.group(self.stage.name)
        self.triton_url = triton_url
        self.stats_path = stats_path
        self.stats = WorkerStats(route.pipeline, self.stage.name, self.group)

    def run(self, stop: threading.Event) -> WorkerStats:
        """Work until ``stop`` is set; returns the final counters."""
        cfg = self.config
        ensure_topics(self.bootstrap, self.topics.all(self.route.stage_names), limits=self.limits)
        consumer = new_consumer(
            self.bootstrap,
            self.group,
            self.limits,
            **{
                "session.timeout.ms": cfg.session_timeout_ms,
                "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
                "max.poll.interval.ms": cfg.max_poll_interval_ms,
                "queued.max.messages.kbytes": cfg.prefetch_kbytes,
                "fetch.max.bytes": self.limits.max_message_bytes,
            },
        )
        consumer.subscribe([self.topic])
        producer = new_producer(self.bootstrap, self.limits)
        caller = EnsembleCaller(self.triton_url, self.stage.ensemble)
        pool = ThreadPoolExecutor(cfg.max_in_flight, thread_name_prefix="triton")
        log.info(
            "worker %s: group %s, topic %s, Triton %s ensemble %s",
            self.stats.pid,
            self.group,
            self.topic,
            self.triton_url,
            self.stage.ensemble,
        )
        self.stats.state = "running"
        try:
            while not stop.is_set():
                ready_ns = time.time_ns()
                polled = consume_available(consumer, cfg.batch_size, cfg.poll_timeout_ms / 1000)
                work = [
                    _Work(
                        (r.topic(), r.partition()),
                        r.offset(),
                        Record.consumed(r),
                        ready_ns,
                    )
                    for r in polled
                    if not self._consumer_error(r.error())
                ]
                if work:
                    producer = self._handle(work, consumer, producer, caller, pool, stop)
                self._update_lag(consumer)
                self._write_stats()
        except BatchAbandoned as exc:
            log.warning("worker %s: %s", self.stats.pid, exc)
        finally:
            self.stats.state = "stopped"
            self.stats.in_flight = 0
            self._write_stats()
            pool.shutdown(wait=True, cancel_futures=True)
            consumer.close()  # leaves the group; commits nothing (no auto-commit)
            producer.flush(cfg.stop_grace_s)  # the broker may be gone
            caller.close()
        return self.stats

    def _handle(
        self,
        work: list[_Work],
        consumer: Consumer,
        producer: Producer,
        caller: EnsembleCaller,
        pool: ThreadPoolExecutor,
        stop: threading.Event,
    ) -> Producer:
        """Handle one polled batch; returns the producer to go on with (a new one if this one
        failed fatally)."""
        self.stats.consumed += len(work)
        for item in work:
            self._check(item)
        self._infer([w for w in work if not w.error], caller, pool, stop)
        try:
            self._send(work, producer, stop)
        except DeliveryFailed as exc:
            # Not committed: read the batch again and redo it (duplicates, never losses).
            log.warning("worker %s: %s; re-reading the batch", self.stats.pid, exc)
            self.stats.last_error = str(exc)[:_MAX_REASON_CHARS]
            for (topic, partition), offset in _first_offsets(work).items():
                consumer.seek(TopicPartition(topic, partition, offset))
            if exc.fatal:
                producer = new_producer(self.bootstrap, self.limits)
            return producer
        self._commit(work, consumer)
        return producer

    def _check(self, item: _Work) -> None:
        """Parse and check a record; sets ``item.error`` for poison."""
        try:
            message = Message.from_record(*item.record)
            if message.pipeline != self.route.pipeline or message.stage != self.stage.name:
                raise SchemaError(
                    f"addressed to pipeline {message.pipeline!r} stage {message.stage!r}, "
                    f"not {self.route.pipeline!r} stage {self.stage.name!r}"
                )
            check_size(message.value, self.limits, what=f"request {message.request_id}")
            sniff(message.value)
        except Exception as exc:  # whatever a record holds, it must not stop the worker
            item.error = f"{type(exc).__name__}: {exc}"
            return
        trace = message.trace.hop_not_before(hop_label(self.stage.name, READY), item.ready_ns)
        item.message = replace(message, trace=trace.hop(hop_label(self.stage.name, CONSUMED)))

    def _infer(
        self,
        pending: list[_Work],
        caller: EnsembleCaller,
        pool: ThreadPoolExecutor,
        stop: threading.Event,
    ) -> None:
        """Fill ``outputs`` or ``error`` of every item; retries while Triton is unavailable."""
        cfg = self.config
        attempts = dict.fromkeys(range(len(pending)), 0)
        todo = list(range(len(pending)))
        delay = cfg.retry_initial_s
        while todo:
            self.stats.in_flight = len(todo)
            futures = {i: pool.submit(self._call, pending[i], caller) for i in todo}
            retry: list[int] = []
            for i, future in futures.items():
                try:
                    pending[i].outputs = future.result()
                except TritonUnavailable as exc:
                    retry.append(i)
                    self.stats.last_error = str(exc)[:_MAX_REASON_CHARS]
                except InputRejected as exc:
                    attempts[i] += 1
                    self.stats.last_error = exc.reason[:_MAX_REASON_CHARS]
                    if exc.poison or attempts[i] >= cfg.server_error_attempts:
                        kind = "rejected by Triton" if exc.poison else "Triton error"
                        pending[i].error = f"{kind}: {exc.reason}"
                    else:
                        retry.append(i)
            todo = retry
            if todo:
                self.stats.retries += 1
                self.stats.state = "retrying"
                self._write_stats()
                log.warning(
                    "worker %s: %d message(s) unanswered (%s); retrying in %.1f s",
                    self.stats.pid,
                    len(todo),
                    self.stats.last_error,
                    delay,
                )
                if stop.wait(delay):
                    raise BatchAbandoned(
                        f"stopped while Triton was unavailable: {len(todo)} message(s) "
                        "left uncommitted for the group to redeliver"
                    )
                delay = min(delay * 2, cfg.retry_max_s)
        self.stats.in_flight = 0
        self.stats.state = "running"

    def _call(self, item: _Work, caller: EnsembleCaller) -> Mapping[str, np.ndarray]:
        """One Triton call for ``item`` (in a pool thread). A retry re-stamps the dispatch: the
        failed tries and the backoff count as waiting."""
        message = item.message
        assert message is not None
        trace = message.trace.restamp(hop_label(self.stage.name, DISPATCHED))
        item.message = message = replace(message, trace=trace)
        outputs = caller.infer(message.value, message.call_id)
        item.message = message.with_hop(hop_label(self.stage.name, ANSWERED))
        return outputs

    def _outgoing(self, item: _Work) -> list[tuple[str, Record]]:
        """What one consumed record becomes: (topic, record) pairs, in order."""
        if not item.error:
            assert item.message is not None and item.outputs is not None
            item.message = item.message.with_hop(hop_label(self.stage.name, EMITTING))
            try:
                emitted = self.stage.emit(item.message, item.outputs, self.stage.name)
                return [self._route(m) for m in emitted]
            except Exception as exc:  # a stage's emit must not stop the worker
                item.error = f"emit failed: {type(exc).__name__}: {exc}"
        source = f"{item.tp[0]}/{item.tp[1]}@{item.offset}"
        reason = item.error[:_MAX_REASON_CHARS]
        log.warning("worker %s: dead letter %s: %s", self.stats.pid, source, reason)
        return [
            (
                self.topics.dead_letter,
                dead_letter_record(item.record, reason, self.stage.name, source),
            )
        ]

    def _route(self, message: Message) -> tuple[str, Record]:
        message = message.with_hop(hop_label(self.stage.name, PRODUCED))
        check_size(message.value, self.limits, what=f"output of {message.request_id}")
        if message.is_result:
            return self.topics.results, message.to_record()
        later = self.route.stage_names[self.route.stage_names.index(self.stage.name) + 1 :]
        if message.stage not in later:
            raise ValueError(f"emitted a message for stage {message.stage!r}, not one of {later}")
        return self.topics.stage_in(message.stage), message.to_record()

    def _send(self, work: list[_Work], producer: Producer, stop: threading.Event) -> None:
        futures = []
        counts = {"results": 0, "forwarded": 0, "dead_lettered": 0}
        kinds = {self.topics.results: "results", self.topics.dead_letter: "dead_lettered"}
        for item in work:
            for topic, record in self._outgoing(item):
                counts[kinds.get(topic, "forwarded")] += 1
                futures.append(produce(producer, topic, record.key, record.value, record.headers))
        waited_since_stop = 0.0
        # The outputs stay queued while the broker is away (up to librdkafka's delivery timeout,
        # then they fail): wait for them, or give up some time after a stop request.
        while not all(f.done() for f in futures):
            producer.poll(1.0)
            if stop.is_set() and not all(f.done() for f in futures):
                waited_since_stop += 1.0
                if waited_since_stop >= self.config.stop_grace_s:
                    raise BatchAbandoned(
                        f"stopped while the broker had not acknowledged {len(futures)} output(s):"
                        " the batch is left uncommitted for the group to redeliver"
                    )
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            fatal = any(isinstance(e, DeliveryError) and e.fatal for e in failed)
            raise DeliveryFailed(f"{len(failed)} output(s): {failed[0]}", fatal=fatal)
        for kind, count in counts.items():
            setattr(self.stats, kind, getattr(self.stats, kind) + count)

    def _commit(self, work: list[_Work], consumer: Consumer) -> None:
        offsets = [
            TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in _last_offsets(work).items()
        ]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() in _REBALANCED:
                # The group moved these partitions elsewhere; their new owner redoes the batch.
                log.warning("worker %s: commit refused after a rebalance: %s", self.stats.pid, exc)
            else:
                # A later commit covers these offsets; if none comes, they are redelivered.
                log.warning("worker %s: commit failed: %s", self.stats.pid, exc)
                self.stats.last_error = f"commit failed: {exc}"
        else:
            self.stats.committed_batches += 1

    def _consumer_error(self, error: KafkaError | None) -> bool:
        """True if a polled item is an error event, not a record (logged; librdkafka recovers
        from everything but fatal errors, which stop the worker)."""
        if error is None:
            return False
        if error.fatal():
            raise KafkaException(error)
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("worker %s: consumer: %s", self.stats.pid, error.str())
            self.stats.last_error = f"consumer: {error.str()}"
        return True

    def _update_lag(self, consumer: Consumer) -> None:
        """Per assigned partition: end offset (as of the last fetch) - position."""
        lag = {}
        try:
            positions = consumer.position(consumer.assignment())
        except KafkaException:
            return
        for tp in positions:
            _, end = consumer.get_watermark_offsets(tp, cached=True)
            if end >= 0 and tp.offset >= 0:
                lag[f"{tp.topic}/{tp.partition}"] = max(0, end - tp.offset)
        self.stats.lag = lag

    def _write_stats(self) -> None:
        if self.stats_path is not None:
            self.stats.write(self.stats_path)


_REBALANCED = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
}


def _first_offsets(work: list[_Work]) -> dict[tuple[str, int], int]:
    first: dict[tuple[str, int], int] = {}
    for item in work:
        first[item.tp] = min(first.get(item.tp, item.offset), item.offset)
    return first


def _last_offsets(work: list[_Work]) -> dict[tuple[str, int], int]:
    last: dict[tuple[str, int], int] = {}
    for item in work:
        last[item.tp] = max(last.get(item.tp, item.offset), item.offset)
    return last
