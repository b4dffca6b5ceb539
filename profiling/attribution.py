"""Each request's end-to-end time split into the profiler's categories, and their statistics.

Attribution is exclusive: at every instant of a request exactly one span is charged — the
deepest one open then (ties: the one that started last). So the categories of a request always
sum to its measured end-to-end time; time no span covers is charged to the root and reported as
``unattributed_ns`` (inside "other", never negative).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cvserve.profiling.categories import CATEGORIES
from cvserve.profiling.trace import Trace

END_TO_END = "end_to_end"
PERCENTILES: tuple[int, ...] = (50, 90, 99)


@dataclass(frozen=True)
class Attribution:
    """One request: ns per category (sums to ``end_to_end_ns``), per span name and per span kind
    (the root's own time is under its kind, ``request``)."""

    request_id: str
    end_to_end_ns: int
    by_category: dict[str, int]
    by_span: dict[str, int]
    unattributed_ns: int
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """Share of the end-to-end time covered by measured spans (1.0: all of it)."""
        if self.end_to_end_ns <= 0:
            return 1.0
        return 1.0 - self.unattributed_ns / self.end_to_end_ns


def attribute(trace: Trace) -> Attribution:
    """Charge every instant of ``trace``'s root span to the deepest span open then."""
    spans = trace.all_spans()
    root = spans[0]
    by_id = {s.span_id: s for s in spans}

    def depth(span_id: int) -> int:
        d = 0
        parent = by_id[span_id].parent_id
        while parent is not None and parent in by_id:
            d += 1
            parent = by_id[parent].parent_id
        return d

    starts = np.array([min(max(s.start_ns, root.start_ns), root.end_ns) for s in spans], np.int64)
    ends = np.array([min(max(s.end_ns, root.start_ns), root.end_ns) for s in spans], np.int64)
    ends = np.maximum(ends, starts)
    bounds = np.unique(np.concatenate([starts, ends]))
    by_category = dict.fromkeys(CATEGORIES, 0)
    by_span: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    unattributed = 0
    if len(bounds) >= 2:
        lo, hi = bounds[:-1], bounds[1:]
        covers = (starts[:, None] <= lo[None, :]) & (ends[:, None] >= hi[None, :])
        depths = np.array([depth(s.span_id) for s in spans])
        order = np.lexsort((np.arange(len(spans)), starts, depths))  # priority, ascending
        rank = np.empty(len(spans), np.int64)
        rank[order] = np.arange(len(spans))
        chosen = np.where(covers, rank[:, None], -1).argmax(axis=0)
        charged = np.bincount(chosen, weights=(hi - lo), minlength=len(spans)).astype(np.int64)
        for span, ns in zip(spans, charged, strict=True):
            if ns == 0:
                continue
            by_category[span.category] += int(ns)
            by_kind[span.kind] = by_kind.get(span.kind, 0) + int(ns)
            if span is root:
                unattributed += int(ns)
            else:
                by_span[span.name] = by_span.get(span.name, 0) + int(ns)
    return Attribution(
        request_id=trace.request_id,
        end_to_end_ns=root.end_ns - root.start_ns,
        by_category=by_category,
        by_span=by_span,
        unattributed_ns=unattributed,
        by_kind=by_kind,
    )


def category_stats(attributions: Sequence[Attribution]) -> dict[str, dict[str, float]]:
    """Per category and for the end-to-end time: mean and percentiles (ms), and the share of the
    summed end-to-end time (0..1)."""
    if not attributions:
        return {}
    total = sum(a.end_to_end_ns for a in attributions) or 1
    columns = {c: [a.by_category[c] for a in attributions] for c in CATEGORIES}
    columns[END_TO_END] = [a.end_to_end_ns for a in attributions]
    stats = {}
    for name, values in columns.items():
        arr = np.asarray(values, dtype=np.float64) / 1e6
        stats[name] = {
            "mean_ms": float(arr.mean()),
            **{f"p{q}_ms": float(np.percentile(arr, q)) for q in PERCENTILES},
            "share": float(arr.sum() * 1e6 / total),
        }
    return stats


def span_means_ms(attributions: Iterable[Attribution]) -> dict[str, float]:
    """Mean exclusive ms per span name (a request without the span counts as 0)."""
    items = list(attributions)
    sums: dict[str, int] = {}
    for a in items:
        for name, ns in a.by_span.items():
            sums[name] = sums.get(name, 0) + ns
    return {name: ns / len(items) / 1e6 for name, ns in sorted(sums.items())} if items else {}


def unattributed_share(attributions: Iterable[Attribution]) -> Mapping[str, float]:
    """Worst and mean share of end-to-end time no span covered."""
    shares = [1.0 - a.coverage for a in attributions]
    if not shares:
        return {"max": 0.0, "mean": 0.0}
    return {"max": max(shares), "mean": sum(shares) / len(shares)}
