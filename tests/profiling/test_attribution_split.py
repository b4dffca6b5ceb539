"""Exclusive attribution: every instant charged once, to the deepest open span."""

from __future__ import annotations

import pytest

from cvserve.profiling.attribution import (
    END_TO_END,
    attribute,
    category_stats,
    span_means_ms,
)
from cvserve.profiling.categories import CATEGORIES
from cvserve.profiling.trace import Trace

MS = 1_000_000


def test_nested_spans_are_charged_their_own_time_only() -> None:
    trace = Trace("r").begin(0)
    server = trace.add("overhead", 10 * MS, 90 * MS, name="triton:classify")
    model = trace.add("overhead", 12 * MS, 80 * MS, name="classify_dnn", parent=server)
    trace.add("queue", 12 * MS, 20 * MS, parent=model)
    trace.add("compute_infer", 20 * MS, 78 * MS, parent=model, role="inference")
    trace.add("send", 0, 10 * MS)
    trace.add("receive", 90 * MS, 100 * MS)
    a = attribute(trace.finish(100 * MS))
    assert a.by_category["inference"] == 58 * MS
    assert a.by_category["queueing"] == 8 * MS
    assert a.by_category["data_movement"] == 20 * MS
    assert a.by_category["other"] == 14 * MS  # server and model bookkeeping: 2 + 2 + 10
    assert a.unattributed_ns == 0 and a.coverage == 1.0
    assert sum(a.by_category.values()) == a.end_to_end_ns


def test_gaps_are_unattributed_other_and_never_negative() -> None:
    trace = Trace("r").begin(0)
    trace.add("read", 0, 30 * MS)
    trace.add("send", 40 * MS, 100 * MS)
    a = attribute(trace.finish(100 * MS))
    assert a.unattributed_ns == 10 * MS
    assert a.by_category["other"] == 10 * MS
    assert a.coverage == pytest.approx(0.9)


def test_overlapping_siblings_and_spans_past_the_root_are_not_double_counted() -> None:
    trace = Trace("r").begin(0)
    trace.add("decode", 0, 60 * MS)
    trace.add("normalize", 40 * MS, 150 * MS)  # overlaps decode and ends after the request
    a = attribute(trace.finish(100 * MS))
    assert sum(a.by_category.values()) == 100 * MS
    assert a.by_category["preprocessing"] == 100 * MS
    assert a.by_span == {"decode": 40 * MS, "normalize": 60 * MS}  # the later one wins overlap


def test_statistics_give_percentiles_and_shares_of_end_to_end() -> None:
    attributions = []
    for i in range(1, 101):
        trace = Trace(f"r{i}").begin(0)
        trace.add("compute_infer", 0, i * MS, role="inference")
        trace.add("queue", i * MS, 2 * i * MS)
        attributions.append(attribute(trace.finish(2 * i * MS)))
    stats = category_stats(attributions)
    assert set(stats) == {*CATEGORIES, END_TO_END}
    assert stats["inference"]["share"] == pytest.approx(0.5)
    assert stats["queueing"]["share"] == pytest.approx(0.5)
    assert stats["preprocessing"]["share"] == 0.0
    assert stats[END_TO_END]["p50_ms"] == pytest.approx(101.0)
    assert stats["inference"]["p99_ms"] == pytest.approx(99.01)
    assert span_means_ms(attributions)["queue"] == pytest.approx(50.5)
