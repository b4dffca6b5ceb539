"""Spans, their categories, clocks, and broker hops turned into spans."""

from __future__ import annotations

import time

import pytest

from cvserve.broker.producer import SUBMIT_HOP
from cvserve.broker.schema import Message, TraceContext
from cvserve.pipelines.catalog import classify
from cvserve.profiling.categories import CATEGORIES, ROLE_CATEGORY, SPAN_CATEGORY
from cvserve.profiling.trace import (
    ClockSample,
    Trace,
    WallClock,
    add_hop_spans,
    hop_event,
    sample_clocks,
    span_category,
)


def test_every_span_kind_and_role_maps_to_a_declared_category() -> None:
    assert set(SPAN_CATEGORY.values()) <= set(CATEGORIES)
    assert set(ROLE_CATEGORY.values()) <= set(CATEGORIES)
    for stage in classify("mobilenet_v3_small").stages:
        assert span_category("compute_infer", stage.role) == ROLE_CATEGORY[stage.role]


def test_unknown_span_kind_is_refused_not_filed_under_other() -> None:
    with pytest.raises(KeyError, match="no category"):
        span_category("teleport")


def test_span_blocks_nest_under_their_parent_and_lie_inside_the_root() -> None:
    trace = Trace("r-1").begin()
    with trace.span("read"):
        pass
    outer = trace.add("overhead", time.monotonic_ns(), time.monotonic_ns() + 1000)
    inner = trace.add("queue", outer.start_ns, outer.start_ns + 10, parent=outer)
    trace.finish(outer.end_ns + 5)
    assert inner.parent_id == outer.span_id
    assert trace.spans[0].parent_id == trace.root.span_id
    assert all(trace.start_ns <= s.start_ns <= s.end_ns <= trace.end_ns for s in trace.spans)


def test_wall_clock_maps_onto_monotonic_and_states_its_drift() -> None:
    start = ClockSample(wall_ns=1_000_000, mono_ns=100, uncertainty_ns=20)
    end = ClockSample(wall_ns=2_000_000, mono_ns=1_000_100 - 500, uncertainty_ns=30)  # stepped
    clock = WallClock(start, end, remote_skew_ns=1_000)
    assert clock.to_monotonic(1_000_000) == 100
    assert clock.to_monotonic(2_000_000) == 999_600
    assert clock.skew_bound_ns == 30 + 500 + 1_000


def test_sampled_clocks_agree_with_a_fresh_reading_within_their_bound() -> None:
    clock = WallClock(sample_clocks(), sample_clocks())
    before = time.monotonic_ns()
    wall = time.time_ns()
    after = time.monotonic_ns()
    mapped = clock.to_monotonic(wall)
    slack = clock.skew_bound_ns + (after - before) + 1_000_000  # 1 ms: scheduler noise
    assert before - slack <= mapped <= after + slack


def test_the_brokers_submit_hop_counts_as_a_produce() -> None:
    assert hop_event(SUBMIT_HOP) == "produced"
    assert hop_event("identify.consumed") == "consumed"


def test_broker_hops_become_transit_wait_and_worker_spans() -> None:
    t0 = time.time_ns()
    message = Message(
        "req", "classify", "classify", b"jpeg", "image/jpeg", trace=TraceContext.new()
    )
    message = message.with_hop(SUBMIT_HOP)
    stamped = [
        (SUBMIT_HOP, t0),
        ("classify.consumed", t0 + 7_000_000),
        ("classify.dispatched", t0 + 9_000_000),
        ("classify.produced", t0 + 30_000_000),
        ("client.consumed", t0 + 31_000_000),
    ]
    received = Message.from_record(message.to_record())
    assert [h.label for h in received.trace.hops] == [SUBMIT_HOP]  # the header round-trips
    sample = sample_clocks()
    clock = WallClock(sample, sample)
    trace = Trace("req").begin(clock.to_monotonic(t0))
    spans = add_hop_spans(trace, stamped, clock)
    trace.finish(clock.to_monotonic(t0 + 31_000_000))
    assert [s.kind for s in spans] == [
        "broker_transit",
        "consumer_wait",
        "worker",
        "broker_transit",
    ]
    assert [s.duration_ns for s in spans] == [7_000_000, 2_000_000, 21_000_000, 1_000_000]
    assert [s.category for s in spans] == [
        "data_movement",
        "queueing",
        "data_movement",
        "data_movement",
    ]
