"""One stage's step on a batch of consumed records, whatever the transport: check → infer (with
retries) → emit → dead letter.

`StageStep` takes `StepRecord`s (a `Record`, when its poll began, and an opaque ``position``: where
the transport read it — Kafka's partition and offset, a Redis entry id — never looked into here)
and returns what to produce (``(topic or stream, Record)`` pairs, in record order) and which
positions may be committed (Kafka) or acknowledged (Redis) once every output was delivered.
A Kafka loop (`broker.worker.StageWorker`) and a Redis loop (`broker.redis_worker.
RedisStageWorker`) drive it; it holds no client of either.

Per record:

1. parsed and checked (schema, addressed stage, key and header bounds, size, image header); a
   poison record becomes a dead letter with a reason naming the field. Nothing a record holds
   raises out of the step;
2. the good ones go to the ensemble (``infer(value, call_id)``), at most the pool's threads at
   once, between a ``<stage>.dispatched`` and a ``<stage>.answered`` hop. `TritonUnavailable` →
   every unanswered record is tried again after an exponential backoff, forever (a stop request
   meanwhile raises `BatchAbandoned`: nothing is committed); `InputRejected` that is poison →
   dead letter; any other server error → dead letter after ``server_error_attempts`` tries;
   any other exception → that record's own dead letter;
3. each answered record is emitted (the stage's `Emit`: a result, or crops addressed to a later
   stage), each output checked against the record limit; an emit or a check that fails
   dead-letters its input.

While it waits (calls out, backoff) the step calls ``keep_alive`` at least every
`KEEP_ALIVE_S`: the transport's own liveness (a Kafka consumer's poll, a Redis claim refresh).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cvserve.broker.dead_letters import dead_letter_record
from cvserve.broker.ensemble import InputRejected, TritonUnavailable
from cvserve.broker.producer import check_record, check_size
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
    hop_label,
    input_digest,
)
from cvserve.broker.stats import WorkerStats
from cvserve.broker.topics import Topics
from cvserve.broker.worker_config import WorkerConfig
from cvserve.broker.worker_metrics import WorkerMetrics
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits
from cvserve.preprocess.sniff import sniff

log = logging.getLogger(__name__)
MAX_REASON_CHARS = 2000
# How often a step that waits calls the transport's keep-alive: well inside any
# max.poll.interval.ms, so a Kafka group never takes the worker for dead.
KEEP_ALIVE_S = 0.5

# One ensemble call: the image bytes and the request id → the outputs (batch dimension removed).
# Raises `TritonUnavailable` (retry later) or `InputRejected`.
Infer = Callable[[bytes, str], Mapping[str, np.ndarray]]
Output = tuple[str, Record]  # (topic or stream, record)


class BatchAbandoned(RuntimeError):
    """Stop was requested while the batch could not be finished: nothing of it is committed."""


@dataclass(eq=False)
class StepRecord:
    """One consumed record and what the step made of it. ``position``: where the transport read
    it (opaque here); ``ready_ns``: wall clock when the poll that returned it began."""

    position: Hashable
    record: Record
    ready_ns: int
    message: Message | None = None
    outputs: Mapping[str, np.ndarray] | None = None
    error: str = ""  # set: goes to the dead-letter topic


@dataclass
class StepOutcome:
    """What a batch became: ``produce`` in record order, and the positions that may be committed
    once the transport delivered every one of them."""

    items: list[StepRecord]
    produce: list[Output] = field(default_factory=list)
    commit: list[Hashable] = field(default_factory=list)


def wait_alive(seconds: float, stop: threading.Event, keep_alive: Callable[[], None]) -> bool:
    """Wait ``seconds``, calling ``keep_alive`` every `KEEP_ALIVE_S`; True if ``stop`` was set
    meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop.wait(min(left, KEEP_ALIVE_S)):
            return True
        keep_alive()
    return stop.is_set()


def next_done(futures: Sequence[Future[Any]]) -> None:
    """Block until one more of ``futures`` is done, at most `KEEP_ALIVE_S`. Only the pending
    ones are waited for: a done future ends a FIRST_COMPLETED wait at once, and the worker spun
    through keep-alive polls for the rest of the batch (measured with py-spy on detect_identify:
    ~60 % of a stage worker's CPU, taken from Triton on a 2-core host)."""
    pending = [f for f in futures if not f.done()]
    if pending:
        wait(pending, KEEP_ALIVE_S, FIRST_COMPLETED)


class StageStep:
    """Stage ``stage`` of ``route``: what its workers do to each record, counted in ``stats``
    (``metrics``, when set, gets the latency of each answered record)."""

    def __init__(
        self,
        route: Route,
        stage: str,
        topics: Topics,
        stats: WorkerStats,
        config: WorkerConfig | None = None,
        limits: MessageLimits = LIMITS,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self.route = route
        self.stage = route.stage(stage)
        self.topics = topics
        self.stats = stats
        self.config = config or WorkerConfig()
        self.limits = limits
        self.on_progress = on_progress  # e.g. rewrite the stats file: a long batch shows
        self.metrics: WorkerMetrics | None = None

    def run(
        self,
        batch: Sequence[StepRecord],
        infer: Infer,
        pool: ThreadPoolExecutor,
        stop: threading.Event,
        keep_alive: Callable[[], None] = lambda: None,
    ) -> StepOutcome:
        """The whole step on ``batch``: answered (`answer`), then emitted (`outputs`)."""
        items = list(batch)
        self.answer(items, infer, pool, stop, keep_alive)
        produce = [output for item in items for output in self.outputs(item)]
        return StepOutcome(items, produce, [item.position for item in items])

    def answer(
        self,
        items: Sequence[StepRecord],
        infer: Infer,
        pool: ThreadPoolExecutor,
        stop: threading.Event,
        keep_alive: Callable[[], None] = lambda: None,
    ) -> None:
        """Check every item, then fill ``outputs`` or ``error`` of each good one (`infer_all`)."""
        self.stats.consumed += len(items)
        for item in items:
            self.check(item)
        self.infer_all([i for i in items if not i.error], infer, pool, stop, keep_alive)

    def check(self, item: StepRecord) -> None:
        """Parse and check a record; sets ``item.error`` for poison, else ``item.message``."""
        route, stage = self.route, self.stage
        try:
            addressed = (route.pipeline, stage.name)  # what the topic says
            message = Message.from_record(item.record, self.limits, addressed)
            if message.pipeline != route.pipeline or message.stage != stage.name:
                raise SchemaError(
                    f"addressed to pipeline {message.pipeline!r} stage {message.stage!r}, "
                    f"not {route.pipeline!r} stage {stage.name!r}"
                )
            check_size(message.value, self.limits, what=f"request {message.request_id}")
            sniff(message.value)
        except Exception as exc:  # whatever a record holds, it must not stop the worker
            item.error = f"{type(exc).__name__}: {exc}"
            return
        if stage is route.first or not message.origin:
            # A request's identity: where its first stage read it and what it read (outside
            # producers cannot forge them for the first stage; a later stage keeps what the
            # earlier one set).
            message = replace(
                message, origin=item.record.source, input_digest=input_digest(message.value)
            )
        trace = message.trace.hop_not_before(hop_label(stage.name, READY), item.ready_ns)
        item.message = replace(message, trace=trace.hop(hop_label(stage.name, CONSUMED)))

    def infer_all(
        self,
        pending: Sequence[StepRecord],
        infer: Infer,
        pool: ThreadPoolExecutor,
        stop: threading.Event,
        keep_alive: Callable[[], None] = lambda: None,
    ) -> None:
        """Fill ``outputs`` or ``error`` of every checked item; retries while Triton is
        unavailable (`BatchAbandoned` if ``stop`` is set meanwhile)."""
        cfg, stats = self.config, self.stats
        attempts = dict.fromkeys(range(len(pending)), 0)
        todo = list(range(len(pending)))
        delay = cfg.retry_initial_s
        while todo:
            stats.in_flight = len(todo)
            self.on_progress()  # `cvserve kafka lag` shows what a long batch has in flight
            futures = {i: pool.submit(self._call, pending[i], infer) for i in todo}
            calls = list(futures.values())
            while not all(f.done() for f in calls):
                next_done(calls)
                keep_alive()
            retry: list[int] = []
            for i, future in futures.items():
                try:
                    pending[i].outputs = future.result()
                except TritonUnavailable as exc:
                    retry.append(i)
                    stats.last_error = str(exc)[:MAX_REASON_CHARS]
                except InputRejected as exc:
                    attempts[i] += 1
                    stats.last_error = exc.reason[:MAX_REASON_CHARS]
                    if exc.poison or attempts[i] >= cfg.server_error_attempts:
                        kind = "rejected by Triton" if exc.poison else "Triton error"
                        pending[i].error = f"{kind}: {exc.reason}"
                    else:
                        retry.append(i)
                except Exception as exc:  # a client-side failure on one input: its own letter
                    pending[i].error = f"calling Triton failed: {type(exc).__name__}: {exc}"
            todo = retry
            if todo:
                stats.retries += 1
                stats.state = "retrying"
                self.on_progress()
                log.warning(
                    "worker %s: %d message(s) unanswered (%s); retrying in %.1f s",
                    stats.pid,
                    len(todo),
                    stats.last_error,
                    delay,
                )
                if wait_alive(delay, stop, keep_alive):
                    raise BatchAbandoned(
                        f"stopped while Triton was unavailable: {len(todo)} message(s) "
                        "left uncommitted for the group to redeliver"
                    )
                delay = min(delay * 2, cfg.retry_max_s)
        stats.in_flight = 0
        stats.state = "running"

    def _call(self, item: StepRecord, infer: Infer) -> Mapping[str, np.ndarray]:
        """One ensemble call for ``item`` (in a pool thread). A retry re-stamps the dispatch:
        the failed tries and the backoff count as waiting."""
        message = item.message
        assert message is not None
        trace = message.trace.restamp(hop_label(self.stage.name, DISPATCHED))
        item.message = message = replace(message, trace=trace)
        outputs = infer(message.value, message.call_id)
        item.message = message.with_hop(hop_label(self.stage.name, ANSWERED))
        return outputs

    def outputs(self, item: StepRecord) -> list[Output]:
        """What one answered or refused record becomes: (topic, record) pairs, in order."""
        if not item.error:
            assert item.message is not None and item.outputs is not None
            item.message = item.message.with_hop(hop_label(self.stage.name, EMITTING))
            try:
                emitted = self.stage.emit(item.message, item.outputs, self.stage.name)
                return [self._addressed(m) for m in emitted]
            except Exception as exc:  # a stage's emit must not stop the worker
                item.error = f"emit failed: {type(exc).__name__}: {exc}"
        return [self.dead_letter(item)]

    def dead_letter(self, item: StepRecord) -> Output:
        """``item``'s record as a dead letter with its ``error`` (trimmed to fit a record)."""
        source = item.record.source
        reason = item.error[:MAX_REASON_CHARS]
        log.warning("worker %s: dead letter %s: %s", self.stats.pid, source, reason)
        letter = dead_letter_record(item.record, reason, self.stage.name, source, self.limits)
        return self.topics.dead_letter, letter

    def _addressed(self, message: Message) -> Output:
        message = message.with_hop(hop_label(self.stage.name, PRODUCED))
        record = message.to_record(self.limits)
        check_record(record, self.limits, what=f"output of {message.request_id}")
        if message.is_result:
            return self.topics.results, record
        names = self.route.stage_names
        later = names[names.index(self.stage.name) + 1 :]
        if message.stage not in later:
            raise ValueError(f"emitted a message for stage {message.stage!r}, not one of {later}")
        return self.topics.stage_in(message.stage), record

    def count_delivered(self, topics: Iterable[str]) -> None:
        """Count outputs the transport delivered, by the topic each went to."""
        kinds = {self.topics.results: "results", self.topics.dead_letter: "dead_lettered"}
        for topic in topics:
            kind = kinds.get(topic, "forwarded")
            setattr(self.stats, kind, getattr(self.stats, kind) + 1)

    def observe(self, item: StepRecord, delivered_ns: int) -> None:
        """Latency histograms of an answered record: consumed → delivered, the ensemble call."""
        if self.metrics is None or item.message is None or item.error:
            return
        at = {hop.label: hop.t_ns for hop in item.message.trace.hops}
        consumed = at.get(hop_label(self.stage.name, CONSUMED))
        dispatched = at.get(hop_label(self.stage.name, DISPATCHED))
        answered = at.get(hop_label(self.stage.name, ANSWERED))
        if consumed is not None:
            self.metrics.stage_latency.observe(max(0, delivered_ns - consumed) / 1e9)
        if dispatched is not None and answered is not None:
            self.metrics.triton_call.observe(max(0, answered - dispatched) / 1e9)
