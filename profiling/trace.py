"""The spans of one request, across processes, on one clock.

A `Trace` is one request: a root span (its measured end-to-end time) and nested spans, each of a
``kind`` that `span_category` maps to one profiler category (declared in `pipelines.spec`).

Clocks. Every span is in CLOCK_MONOTONIC nanoseconds of this host (`time.monotonic_ns`), the
clock each process reads for its own spans. Triton's trace timestamps are
``std::chrono::steady_clock``, which on Linux is CLOCK_MONOTONIC: the same kernel clock in every
process of one host, so they need no conversion (`profiling.tritontrace` checks each request: the
server must start after the client sent and answer before the client received; the worst
overshoot is reported). Broker hops carry wall-clock ns (``time.time_ns`` of whichever process
touched the message): `WallClock` maps them onto the monotonic clock with offsets sampled at the
start and end of a run and states its bound (`WallClock.skew_bound_ns`).
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cvserve.broker.schema import ANSWERED, CONSUMED, DISPATCHED, EMITTING, PRODUCED, READY
from cvserve.profiling.categories import OTHER, ROLE_CATEGORY, SPAN_CATEGORY

COMPUTE_INFER = "compute_infer"  # a model's own compute: its stage role's category
ROOT = "request"  # the root span: its time not covered by a child is unattributed ("other")

# Hop labels (`broker.schema.hop_label`) are "<component>.<event>"; consecutive hops of a message
# make a span of this kind. A stage worker's finer hops split its share: produced → ready is the
# message waiting for a busy consumer to poll (queueing), ready → consumed the fetch (transit);
# answered → emitting waits for the rest of the worker's batch (queueing); dispatched → answered
# is the Triton call and emitting → produced makes the outputs (crops cut and JPEG-encoded,
# results serialized for the broker). Without them, consumed → produced is all the worker's.
HOP_SPAN_KIND: dict[tuple[str, str], str] = {
    (PRODUCED, READY): "consumer_wait",
    (READY, CONSUMED): "broker_transit",
    (PRODUCED, CONSUMED): "broker_transit",
    (CONSUMED, DISPATCHED): "consumer_wait",
    (DISPATCHED, ANSWERED): "worker",
    (ANSWERED, EMITTING): "consumer_wait",
    (EMITTING, PRODUCED): "worker",
    (ANSWERED, PRODUCED): "worker",
    (DISPATCHED, PRODUCED): "worker",
    (CONSUMED, PRODUCED): "worker",
}
# Hop labels that mean one of the events above: the producer's first hop
# (`broker.producer.SUBMIT_HOP`, checked by the tests).
HOP_EVENT_ALIASES: dict[str, str] = {"submit": PRODUCED}


def span_category(kind: str, role: str | None = None) -> str:
    """The category of a span: a stage's compute by its role, anything else by its kind."""
    if kind == ROOT:
        return OTHER
    if kind == COMPUTE_INFER:
        return ROLE_CATEGORY.get(role or "", OTHER)
    if kind not in SPAN_CATEGORY:
        raise KeyError(f"span kind {kind!r} has no category in profiling.categories.SPAN_CATEGORY")
    return SPAN_CATEGORY[kind]


@dataclass(frozen=True, slots=True)
class Span:
    """``[start_ns, end_ns)`` on this host's monotonic clock, inside ``parent_id`` if given."""

    span_id: int
    parent_id: int | None
    name: str
    kind: str
    category: str
    start_ns: int
    end_ns: int
    process: str = "client"
    stage: str | None = None
    lane: int = 0  # parallel branches of one request (a fan-out's crops) each get their own

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass
class Trace:
    """One request: ``request_id`` (what Triton and Kafka see), a trace id, and its spans.

    `begin`/`finish` bound the root span; `span` times a block; `add` records a span measured
    elsewhere. ``marks`` keeps named instants (e.g. the Triton call's start and end).
    """

    request_id: str
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    spans: list[Span] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, object] = field(default_factory=dict)
    _start_ns: int | None = None
    _end_ns: int | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    ROOT_ID = 0

    def begin(self, t_ns: int | None = None) -> Trace:
        self._start_ns = time.monotonic_ns() if t_ns is None else t_ns
        return self

    def finish(self, t_ns: int | None = None) -> Trace:
        self._end_ns = time.monotonic_ns() if t_ns is None else t_ns
        return self

    @property
    def start_ns(self) -> int:
        if self._start_ns is None:
            raise RuntimeError(f"trace {self.request_id} was never begun")
        return self._start_ns

    @property
    def end_ns(self) -> int:
        if self._end_ns is None:
            raise RuntimeError(f"trace {self.request_id} was never finished")
        return self._end_ns

    @property
    def end_to_end_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def root(self) -> Span:
        return Span(
            self.ROOT_ID, None, ROOT, ROOT, OTHER, self.start_ns, self.end_ns, process="client"
        )

    def add(
        self,
        kind: str,
        start_ns: int,
        end_ns: int,
        *,
        name: str | None = None,
        parent: Span | None = None,
        process: str = "client",
        stage: str | None = None,
        role: str | None = None,
        lane: int | None = None,
    ) -> Span:
        """Record a span of ``kind`` (``end_ns`` is raised to ``start_ns`` if below it); its lane
        is ``lane``, else its parent's."""
        span = Span(
            span_id=next(self._ids),
            parent_id=self.ROOT_ID if parent is None else parent.span_id,
            name=name or kind,
            kind=kind,
            category=span_category(kind, role),
            start_ns=start_ns,
            end_ns=max(start_ns, end_ns),
            process=process,
            stage=stage,
            lane=lane if lane is not None else (parent.lane if parent is not None else 0),
        )
        self.spans.append(span)
        return span

    @contextlib.contextmanager
    def span(
        self, kind: str, name: str | None = None, parent: Span | None = None
    ) -> Iterator[None]:
        """Time the block as a client span of ``kind``."""
        start = time.monotonic_ns()
        try:
            yield
        finally:
            self.add(kind, start, time.monotonic_ns(), name=name, parent=parent)

    def all_spans(self) -> list[Span]:
        """The root first, then every recorded span."""
        return [self.root, *self.spans]


@dataclass(frozen=True)
class ClockSample:
    """A wall-clock reading and the monotonic instant it belongs to, ± ``uncertainty_ns``."""

    wall_ns: int
    mono_ns: int
    uncertainty_ns: int

    @property
    def offset_ns(self) -> int:
        return self.wall_ns - self.mono_ns


def sample_clocks(tries: int = 9) -> ClockSample:
    """Read the wall clock between two monotonic readings; keep the tightest of ``tries``."""
    best: ClockSample | None = None
    for _ in range(tries):
        before = time.monotonic_ns()
        wall = time.time_ns()
        after = time.monotonic_ns()
        sample = ClockSample(wall, (before + after) // 2, (after - before + 1) // 2)
        if best is None or sample.uncertainty_ns < best.uncertainty_ns:
            best = sample
    assert best is not None
    return best


@dataclass(frozen=True)
class WallClock:
    """Maps wall-clock ns (broker hops) onto this host's monotonic clock.

    On one host both clocks advance at the same (NTP-slewed) rate; they differ only by steps of
    the wall clock, which show as a change of offset between ``start`` and ``end``. The bound is
    that change plus the sampling uncertainty, plus ``remote_skew_ns`` for hops stamped on other
    hosts (their NTP error, which only the operator can state).
    """

    start: ClockSample
    end: ClockSample
    remote_skew_ns: int = 0

    def to_monotonic(self, wall_ns: int) -> int:
        span = self.end.wall_ns - self.start.wall_ns
        if span <= 0:
            return wall_ns - self.start.offset_ns
        fraction = min(1.0, max(0.0, (wall_ns - self.start.wall_ns) / span))
        offset = self.start.offset_ns + fraction * (self.end.offset_ns - self.start.offset_ns)
        return int(wall_ns - offset)

    @property
    def skew_bound_ns(self) -> int:
        drift = abs(self.end.offset_ns - self.start.offset_ns)
        return max(self.start.uncertainty_ns, self.end.uncertainty_ns) + drift + self.remote_skew_ns

    def describe(self) -> dict[str, object]:
        return {
            "hops": "wall clock (time.time_ns) → monotonic via offsets sampled at run start/end",
            "offset_drift_ns": abs(self.end.offset_ns - self.start.offset_ns),
            "sampling_uncertainty_ns": max(self.start.uncertainty_ns, self.end.uncertainty_ns),
            "remote_skew_ns": self.remote_skew_ns,
            "skew_bound_ns": self.skew_bound_ns,
        }


def hop_event(label: str) -> str:
    """``"classify.consumed"`` → ``"consumed"``; ``"submit"`` → ``"produced"``."""
    event = label.rsplit(".", 1)[-1]
    return HOP_EVENT_ALIASES.get(event, event)


def hop_span_kind(a: str, b: str) -> str:
    """The span kind of consecutive hops labelled ``a`` then ``b`` (overhead if undeclared)."""
    return HOP_SPAN_KIND.get((hop_event(a), hop_event(b)), "overhead")


def add_hop_span(
    trace: Trace,
    a: tuple[str, int],
    b: tuple[str, int],
    parent: Span | None = None,
    lane: int | None = None,
) -> Span:
    """The span between hops ``a`` and ``b`` (``(label, monotonic ns)``), of `hop_span_kind`.
    Its process is "broker" while the message is in a topic (from a produce to the consumer's
    receipt), else "worker:<stage>"; ``stage`` is the consuming component's."""
    (label_a, t_a), (label_b, t_b) = a, b
    kind = hop_span_kind(label_a, label_b)
    stage = label_b.rsplit(".", 1)[0]
    in_topic = kind == "broker_transit" or hop_event(label_a) == PRODUCED
    return trace.add(
        kind,
        t_a,
        t_b,
        name=f"{label_a} → {label_b}",
        parent=parent,
        process="broker" if in_topic else f"worker:{stage}",
        stage=stage,
        lane=lane,
    )


def add_hop_spans(
    trace: Trace,
    hops: Iterable[tuple[str, int]],
    clock: WallClock,
    parent: Span | None = None,
) -> list[Span]:
    """One span per pair of consecutive hops (``(label, wall ns)``, as `broker.schema.Hop`s
    carry them), mapped by ``clock``: see `add_hop_span`."""
    mono = [(label, clock.to_monotonic(t)) for label, t in hops]
    return [add_hop_span(trace, a, b, parent) for a, b in itertools.pairwise(mono)]
