"""What a profiling sweep measured: each request's record, each point's result, the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cvserve.profiling import tritonstats
from cvserve.profiling.attribution import (
    Attribution,
    category_stats,
    span_means_ms,
    unattributed_share,
)
from cvserve.profiling.sweep_plan import Point, SweepConfig
from cvserve.profiling.trace import Trace


@dataclass(frozen=True)
class RequestRecord:
    """One request of a point: its trace, attribution, and how its Triton trace fitted."""

    trace: Trace
    attribution: Attribution
    triton_traced: bool
    skew_ns: int


@dataclass
class PointResult:
    """Everything measured at one point."""

    point: Point
    records: list[RequestRecord]
    wall_s: float
    errors: int
    ensemble: str
    stats: dict[str, tritonstats.ModelStats]
    trace_totals: dict[str, dict[str, int]]
    start_ns: int

    @property
    def images_per_s(self) -> float:
        return len(self.records) / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict[str, Any]:
        attributions = [r.attribution for r in self.records]
        byte_counts = [int(r.trace.attributes.get("request_bytes", 0)) for r in self.records]
        return {
            "placement": self.point.placement,
            "size": self.point.size,
            "width": self.point.width,
            "height": self.point.height,
            "concurrency": self.point.concurrency,
            "ensemble": self.ensemble,
            "requests": len(self.records),
            "errors": self.errors,
            "wall_s": round(self.wall_s, 3),
            "images_per_s": round(self.images_per_s, 2),
            "categories": category_stats(attributions),
            "spans_ms": span_means_ms(attributions),
            "unattributed_share": unattributed_share(attributions),
            "triton_traced": sum(r.triton_traced for r in self.records),
            "max_skew_ns": max((r.skew_ns for r in self.records), default=0),
            "request_bytes_mean": sum(byte_counts) / len(byte_counts) if byte_counts else 0,
            "triton_vs_stats": triton_vs_stats(self.trace_totals, self.stats),
        }


def triton_vs_stats(
    traced: dict[str, dict[str, int]], stats: dict[str, tritonstats.ModelStats]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and phase: ms summed over the traced requests beside the statistics API's."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, delta in stats.items():
        if model not in traced:
            continue
        out[model] = {
            phase: {"trace_ms": traced[model][phase] / 1e6, "stats_ms": delta.ns[phase] / 1e6}
            for phase in tritonstats.PHASES
        }
        out[model]["requests"] = {
            "trace": float(traced[model]["requests"]),
            "stats": float(delta.requests),
        }
    return out


@dataclass
class SweepRun:
    """A sweep's results and what they were measured on."""

    pipeline: str
    config: SweepConfig
    results: list[PointResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    server: str = "embedded"
    # How requests travelled when not straight to Triton (e.g. Kafka: bootstrap, namespace).
    transport: dict[str, Any] = field(default_factory=dict)
    clocks: dict[str, Any] = field(default_factory=dict)  # added to the summary's clock notes
