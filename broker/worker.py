"""`StageWorker`: the Kafka loop of a stage — consume its topic, hand each polled batch to the
stage's step, produce what the step returns, commit.

Delivery is at-least-once. Per polled batch (at most ``batch_size`` records, at most
``batch_max_bytes``):

1. the records are checked and answered by `broker.stage_step.StageStep` (poison → dead letter,
   Triton unavailable → retried with backoff, at most ``max_in_flight`` calls at once; its
   docstring says which error goes where: by the gRPC status code,
   `broker.ensemble.classify_error`);
2. what the step makes of each record (results, crops for a later stage, dead letters) is sent in
   record order; a record the broker refuses (too large, invalid) dead-letters its input, a dead
   letter it refuses is sent again with only the reason and the source;
3. the batch's offsets are committed only once the broker acknowledged every output.

While a batch is in hand the worker keeps polling its consumer (records that arrive are carried
into the next batch; once they make one, its partitions are paused until the batch ends), so a
batch may take longer than ``max.poll.interval.ms`` (a slow Triton, a long backoff) without the
group evicting the worker and redelivering the batch. If the group moves a partition anyway (a
rebalance), that partition's records are dropped from the batch unsent and uncommitted: its new
owner answers them once.

So a slow stage grows its topic's lag, never its memory: one batch in hand (``batch_size``
records, at most ``batch_max_bytes`` plus one record), per assigned partition at most
``prefetch_kbytes`` fetched ahead plus one record, as much again carried, and a record's hops
read one at a time into at most ``max_hops`` (`WorkerConfig.record_memory_bytes`; tested with
120 MB of lag and with 15 MB hops headers).
A stop request (SIGTERM) lets the batch in hand finish and commit; if Triton is down at that
moment (or the broker does not acknowledge the outputs within ``stop_grace_s``), the batch is
abandoned uncommitted and the group redelivers it. Per-key order holds: a key lives in one
partition, handled in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Unpack

from cvserve.broker.clients import (
    Consumer,
    DeliveryError,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
    new_consumer,
    new_producer,
    produce,
)
from cvserve.broker.ensemble import EnsembleCaller
from cvserve.broker.polling import Polled, poll_records
from cvserve.broker.routes import Route
from cvserve.broker.schema import Message, Record
from cvserve.broker.stage_loop import LoopOptions, StageLoop
from cvserve.broker.stage_step import (
    KEEP_ALIVE_S,
    MAX_REASON_CHARS,
    BatchAbandoned,
    Output,
    StepRecord,
)
from cvserve.broker.stats import WorkerStats
from cvserve.broker.topics import ensure_topics
from cvserve.broker.worker_config import WorkerConfig

log = logging.getLogger(__name__)
# How often a worker with a batch in hand polls its consumer (`stage_step.KEEP_ALIVE_S`).
_KEEP_ALIVE_S = KEEP_ALIVE_S
__all__ = ["BatchAbandoned", "DeliveryFailed", "StageWorker"]


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge every output of a batch (it is away, or the producer
    broke); ``fatal``: the producer is unusable (librdkafka's idempotence state broke) and must
    be replaced."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class _Work(StepRecord):
    """One consumed Kafka record (its position: topic, partition and offset) and what became of
    it, with the acknowledgements of its outputs."""

    def __init__(
        self,
        tp: tuple[str, int],
        offset: int,
        record: Record,
        ready_ns: int,
        message: Message | None = None,
    ) -> None:
        super().__init__((tp, offset), record, ready_ns, message)
        self.tp = tp  # topic, partition
        self.offset = offset
        self.deliveries: list[tuple[str, Future[None]]] = []  # topic, ack


class StageWorker(StageLoop):
    """One member of the consumer group of ``stage`` of ``route`` on the Kafka broker at
    ``bootstrap``."""

    def __init__(
        self,
        bootstrap: str,
        route: Route,
        stage: str,
        triton_url: str,
        config: WorkerConfig | None = None,
        **options: Unpack[LoopOptions],
    ) -> None:
        super().__init__(route, stage, triton_url, config, **options)
        self.bootstrap = bootstrap
        # Partitions the group took from this worker since the batch in hand was polled.
        self._revoked: set[tuple[str, int]] = set()
        # Records a keep-alive poll returned mid-batch (a partition assigned meanwhile).
        self._carried: list[Polled] = []
        self._paused: list[TopicPartition] = []  # what this batch paused

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
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        producer = new_producer(self.bootstrap, self.limits)

        def close() -> None:
            consumer.close()  # leaves the group; commits nothing (no auto-commit)
            producer.flush(cfg.stop_grace_s)  # the one in use; the broker may be gone

        with self.serving(close) as (caller, pool):
            log.info(
                "worker %s: group %s, topic %s, Triton %s ensemble %s",
                self.stats.pid,
                self.group,
                self.topic,
                self.triton_url,
                self.stage.ensemble,
            )
            self.stats.state = "running"
            while not stop.is_set():
                self._beat()
                ready_ns = time.time_ns()
                # Revocations from here on (this poll included) drop their records from the batch.
                self._revoked.clear()
                polled, self._carried = self._carried, []
                polled += poll_records(
                    consumer,
                    cfg.batch_size - len(polled),
                    cfg.batch_max_bytes - sum(p.record.size for p in polled),
                    0.0 if polled else cfg.poll_timeout_ms / 1000,
                    self._consumer_error,
                )
                work = [_Work((p.topic, p.partition), p.offset, p.record, ready_ns) for p in polled]
                if work:
                    started_ns = time.monotonic_ns()
                    producer = self._handle(work, consumer, producer, caller, pool, stop)
                    self.stats.busy_ns += time.monotonic_ns() - started_ns
                self._update_lag(consumer)
                self._write_stats()
        return self.stats

    def _on_assign(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        if self.metrics is not None:  # joined the group (an empty assignment counts)
            self.metrics.joined = True

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._revoked.update(gone)
        # A record carried from a partition the group moved was never committed here: its new
        # owner reads it again, so answering it here too would answer it twice.
        self._carried = [p for p in self._carried if (p.topic, p.partition) not in gone]

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
        failed fatally). Partitions are paused only once keep-alive polls carried a next batch
        (`_keep_alive`): pausing them all up front would make librdkafka drop their prefetched
        records, and after resume the next fetch waits for the broker thread's next turn — up
        to fetch.wait.max.ms (0.5 s) or its 1-s idle tick. Measured with `cvserve profile
        --kafka` (detect_identify): ~440 ms per batch of a worker polling with a record already
        in the topic. A batch of more bytes than the prefetch bound pauses them all up front:
        its records dominate memory, and its handling time hides the refetch."""
        self._paused = []
        if sum(item.record.size for item in work) > self.config.prefetch_bytes:
            self._paused = consumer.assignment()
            consumer.pause(self._paused)
        try:
            self.step.answer(work, caller.infer, pool, stop, partial(self._keep_alive, consumer))
            work = self._drop_revoked(work, consumer)
            try:
                self._send(work, producer, stop, consumer)
            except DeliveryFailed as exc:
                # Not committed: read the batch again and redo it (duplicates, never losses).
                log.warning("worker %s: %s; re-reading the batch", self.stats.pid, exc)
                self.stats.last_error = str(exc)[:MAX_REASON_CHARS]
                for (topic, partition), offset in _first_offsets(work).items():
                    try:
                        consumer.seek(TopicPartition(topic, partition, offset))
                    except KafkaException:  # moved to another member: its new owner redoes it
                        self._revoked.add((topic, partition))
                if exc.fatal:
                    producer = new_producer(self.bootstrap, self.limits)
                return producer
            work = self._drop_revoked(work, consumer)
            if work:
                self._commit(work, consumer)
            return producer
        finally:
            # librdkafka keeps a partition paused across a rebalance (revoked, then assigned
            # again): resume every partition paused for this batch, assigned now or not — and
            # only those (a resume is a new fetch version: it drops what was prefetched).
            paused = {(tp.topic, tp.partition) for tp in self._paused}
            if paused:
                consumer.resume([TopicPartition(topic, partition) for topic, partition in paused])
            self._paused = []

    def _drop_revoked(self, work: list[_Work], consumer: Consumer) -> list[_Work]:
        """``work`` without the records of partitions the group moved away mid-batch.

        A moved partition the group gave back to this worker (an eager rebalance revokes all,
        then assigns again) restarts at its committed offset, so this batch may also hold
        records fetched after the return (dropped with the rest): such a partition is sought
        back to its first dropped or carried record, or the next batch would skip what was
        dropped here and its commit would lose it."""
        kept = [item for item in work if item.tp not in self._revoked]
        if len(kept) == len(work):
            return work
        dropped = [item for item in work if item.tp in self._revoked]
        self.stats.revoked += len(dropped)
        log.warning(
            "worker %s: %d record(s) of partition(s) %s moved to another member mid-batch: "
            "left to it",
            self.stats.pid,
            len(dropped),
            sorted(self._revoked),
        )
        first = _first_offsets(dropped)
        for p in self._carried:
            if (p.topic, p.partition) in first:
                first[p.topic, p.partition] = min(first[p.topic, p.partition], p.offset)
        self._carried = [p for p in self._carried if (p.topic, p.partition) not in first]
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        for (topic, partition), offset in first.items():
            if (topic, partition) not in assigned:
                continue  # moved: its new owner reads from the committed offset
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # moved again meanwhile: its new owner reads it
                log.warning(
                    "worker %s: no rewind of %s[%d]: %s", self.stats.pid, topic, partition, exc
                )
        return kept

    def _keep_alive(self, consumer: Consumer) -> None:
        """Poll the consumer (the group's liveness and rebalances) during a batch: a record it
        returns is carried into the next batch. Once the carried records make a batch
        (``batch_size`` records or ``prefetch_kbytes``), every partition is paused until this
        batch ends (librdkafka drops their prefetch, `WorkerConfig.record_memory_bytes` counts
        the carried records). Pausing a partition at its first carried record instead left the
        rest of its backlog to a refetch after the resume: up to ``fetch.wait.max.ms`` of an
        idle worker per batch."""
        self._beat()
        message = consumer.poll(0)
        if message is None:
            return
        if message.error() is not None:
            self._consumer_error(message.error())
            return
        self._carried.append(
            Polled(message.topic(), message.partition(), message.offset(), Record.consumed(message))
        )
        carried_bytes = sum(p.record.size for p in self._carried)
        if (
            len(self._carried) >= self.config.batch_size
            or carried_bytes >= self.config.prefetch_bytes
        ):
            assigned = consumer.assignment()
            consumer.pause(assigned)
            self._paused.extend(assigned)

    def _until_done(
        self, futures: Sequence[Future[Any]], consumer: Consumer, serve: Callable[[], object]
    ) -> None:
        """Until every future is done: ``serve`` (e.g. producer callbacks) and keep alive."""
        while not all(f.done() for f in futures):
            serve()
            self._keep_alive(consumer)

    def _infer(
        self,
        pending: list[_Work],
        caller: EnsembleCaller,
        pool: ThreadPoolExecutor,
        stop: threading.Event,
        consumer: Consumer,
    ) -> None:
        """`StageStep.infer_all` with this worker's consumer kept alive meanwhile."""
        self.step.infer_all(pending, caller.infer, pool, stop, partial(self._keep_alive, consumer))

    def _send(
        self, work: list[_Work], producer: Producer, stop: threading.Event, consumer: Consumer
    ) -> None:
        """Send every item's outputs and wait for the broker. An output the broker refuses
        (too large, invalid) turns its input into a dead letter, sent in a further round; a dead
        letter it refuses, into one that keeps only the reason and the source."""
        rounds: list[tuple[_Work, list[Output]]] = [(w, self.step.outputs(w)) for w in work]
        for _ in range(3):  # outputs; a dead letter of the record; one without it
            for item, outgoing in rounds:
                item.deliveries = [
                    (topic, produce(producer, topic, r.key, r.value, r.headers))
                    for topic, r in outgoing
                ]
            futures = [f for item, _ in rounds for _, f in item.deliveries]
            self._wait_delivered(futures, producer, stop, consumer)
            failed = [e for e in (f.exception() for f in futures) if e is not None]
            transient = [e for e in failed if not (isinstance(e, DeliveryError) and e.refused)]
            if transient:
                fatal = any(isinstance(e, DeliveryError) and e.fatal for e in transient)
                raise DeliveryFailed(f"{len(failed)} output(s): {transient[0]}", fatal=fatal)
            self._count_delivered(item for item, _ in rounds)
            refused = [(item, _refusal(item)) for item, _ in rounds if _refusal(item)]
            rounds = []
            for item, reason in refused:
                if item.error:  # its dead letter was refused: keep only reason and source
                    item.error = (
                        f"{item.error}; a dead letter with the record was refused: {reason}"
                    )
                    item.record = Record(None, None, [], item.record.source)
                else:
                    item.error = f"output refused by the broker: {reason}"
                rounds.append((item, [self.step.dead_letter(item)]))
            if not rounds:
                return
        for item, _ in rounds:
            log.error(
                "worker %s: no dead letter of %s could be sent: %s",
                self.stats.pid,
                item.record.source,
                item.error,
            )
            self.stats.last_error = item.error[:MAX_REASON_CHARS]

    def _count_delivered(self, items: Iterable[_Work]) -> None:
        now_ns = time.time_ns()
        for item in items:
            self.step.count_delivered(t for t, f in item.deliveries if f.exception() is None)
            self.step.observe(item, now_ns)

    def _wait_delivered(
        self,
        futures: list[Future[None]],
        producer: Producer,
        stop: threading.Event,
        consumer: Consumer,
    ) -> None:
        """Until the broker answered for every future. The outputs stay queued while the broker
        is away (up to librdkafka's delivery timeout, then they fail); after a stop request,
        give up ``stop_grace_s`` later."""
        stopped_at: float | None = None

        def serve() -> None:
            nonlocal stopped_at
            producer.poll(_KEEP_ALIVE_S)
            if stop.is_set() and stopped_at is None:
                stopped_at = time.monotonic()
            if stopped_at is not None and time.monotonic() - stopped_at >= self.config.stop_grace_s:
                raise BatchAbandoned(
                    f"stopped while the broker had not acknowledged {len(futures)} output(s):"
                    " the batch is left uncommitted for the group to redeliver"
                )

        self._until_done(futures, consumer, serve)

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

    def _consumer_error(self, error: KafkaError) -> None:
        """A polled error event: logged (librdkafka recovers from everything but fatal errors,
        which stop the worker)."""
        if error.fatal():
            raise KafkaException(error)
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("worker %s: consumer: %s", self.stats.pid, error.str())
            self.stats.last_error = f"consumer: {error.str()}"

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


def _refusal(item: _Work) -> str:
    """Why the broker refused an output of ``item`` for good ("" if it did not)."""
    for _, future in item.deliveries:
        exc = future.exception()
        if isinstance(exc, DeliveryError) and exc.refused:
            return str(exc)
    return ""
