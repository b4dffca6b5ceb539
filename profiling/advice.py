"""Placement advice from a sweep: per image size, where preprocessing should run and what it
buys, quoting the measured numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cvserve.profiling.attribution import END_TO_END

# Throughput differences below this are reported as no clear winner (sweeps on shared machines
# vary by a few per cent run to run).
CLEAR_GAIN = 0.05


def _where(placement: str) -> str:
    side, _, device = placement.partition("-")
    return (
        f"in the {side} on the {device.upper()}"
        if side == "client"
        else (f"on the server's {device.upper()}")
    )


def _kb(n: float) -> str:
    return f"{n / 1024:,.0f} KB"


def _p50(point: dict[str, Any]) -> float:
    return point["categories"][END_TO_END]["p50_ms"]


def advise_size(size: str, points: Sequence[dict[str, Any]]) -> str:
    """One sentence for one image size from its points (all placements, all concurrency):
    the placement with the most throughput at the highest common concurrency, else (within
    5 %) the one with the lowest p50 at the lowest."""
    by_placement: dict[str, dict[int, dict[str, Any]]] = {}
    for p in points:
        if p["categories"]:
            by_placement.setdefault(p["placement"], {})[p["concurrency"]] = p
    if len(by_placement) < 2:
        only = ", ".join(by_placement) or "no placement"
        return f"{size}: only {only} measured; run two placements to compare."
    common = set.intersection(*(set(levels) for levels in by_placement.values()))
    if not common:
        return f"{size}: the placements share no concurrency level; nothing to compare."
    top, low = max(common), min(common)
    ranked = sorted(by_placement, key=lambda pl: -by_placement[pl][top]["images_per_s"])
    best, runner = ranked[0], ranked[1]
    b, r = by_placement[best][top], by_placement[runner][top]
    gain = b["images_per_s"] / r["images_per_s"] - 1 if r["images_per_s"] else float("inf")
    fastest = min(by_placement, key=lambda pl: _p50(by_placement[pl][low]))
    slowest = max(by_placement, key=lambda pl: _p50(by_placement[pl][low]))
    latency_gain = 1 - _p50(by_placement[fastest][low]) / _p50(by_placement[slowest][low])
    if gain < CLEAR_GAIN and latency_gain >= CLEAR_GAIN:
        best, runner = fastest, slowest
        b, r = by_placement[best][top], by_placement[runner][top]
        verdict = (
            f"preprocess {_where(best)} ({best}): same throughput within 5 %, "
            f"{latency_gain:.0%} lower p50 when idle"
        )
    elif gain < CLEAR_GAIN:
        verdict = f"no clear winner between {best} and {runner} (within 5 %)"
    else:
        verdict = f"preprocess {_where(best)} ({best}): {gain:+.0%} throughput"
        if fastest != best and latency_gain >= CLEAR_GAIN:
            verdict += f", though {fastest} answers faster when idle"
    b1, r1 = by_placement[best][low], by_placement[runner][low]
    share = {
        c: (b["categories"][c]["share"], r["categories"][c]["share"])
        for c in ("preprocessing", "data_movement")
    }
    facts = (
        f"{b['images_per_s']:.1f} vs {r['images_per_s']:.1f} img/s ({runner}) at concurrency "
        f"{top}; p50 {_p50(b1):.1f} vs {_p50(r1):.1f} ms at concurrency {low}; request "
        f"{_kb(b['request_bytes_mean'])} vs {_kb(r['request_bytes_mean'])}; preprocessing "
        f"{share['preprocessing'][0]:.0%} vs {share['preprocessing'][1]:.0%} and data movement "
        f"{share['data_movement'][0]:.0%} vs {share['data_movement'][1]:.0%} of end-to-end"
    )
    return f"{size}: {verdict}: {facts}."


def placement_advice(summary: dict[str, Any]) -> list[str]:
    """One line per image size of the sweep, in the sweep's order."""
    sizes: dict[str, list[dict[str, Any]]] = {}
    for p in summary["points"]:
        sizes.setdefault(p["size"], []).append(p)
    return [f"{summary['pipeline']} {advise_size(size, pts)}" for size, pts in sizes.items()]
