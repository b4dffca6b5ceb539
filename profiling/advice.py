"""Advice from a sweep, quoting the measured numbers: the share of end-to-end time spent outside
the DNN per placement and size and what to change first (`outside_dnn`: the paper's question);
per image size, where preprocessing should run and what it buys (`placement_advice`), or, for a
run across Kafka, what the broker costs beside the stages and what to change
(`broker_advice`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cvserve.models.fusion import FUSED_SUFFIX
from cvserve.profiling.attribution import END_TO_END
from cvserve.profiling.categories import CATEGORIES

# Throughput differences below this are reported as no clear winner (sweeps on shared machines
# vary by a few per cent run to run).
CLEAR_GAIN = 0.05
# Inference per request growing this much with concurrency while throughput falls: more work per
# image, not just larger batches (which grow it without lowering throughput).
COMPUTE_GROWTH = 2.0


# What to change first when a category other than inference takes the most time, in words.
REMEDY: dict[str, str] = {
    "preprocessing": "decode on the GPU (server-gpu: DALI mixed), decode JPEGs reduced "
    "(opencv-reduced) or send smaller images",
    "data_movement": "send encoded images instead of tensors, keep tensors on one device "
    "(fuse_stages) or shorten the hops",
    "queueing": "add instances or batch more (cvserve tune), or keep fewer requests in flight",
    "postprocessing": "run postprocessing on the DNN's device, batched (fuse_stages)",
    "other": "fuse the stages (one model, no hand-offs) and look at the server's spare CPU",
}
# Where the pipeline is fused already (`models.fusion`), or the requests cross a broker.
REMEDY_FUSED: dict[str, str] = {
    **REMEDY,
    "data_movement": "send encoded images instead of tensors or shorten the hops",
    "postprocessing": "run postprocessing on the DNN's device, batched",
    "other": "look at the server's spare CPU",
}
BROKER_MOVEMENT = "the broker hops and the workers' own time: see the broker advice"
INFERENCE = "inference"


def remedy(point: dict[str, Any], category: str) -> str:
    """What to change first when ``category`` leads ``point`` (a summary point): not fusing a
    pipeline served fused (a model named `models.fusion.fused_model_name` answered it), and
    across a broker data movement is mostly the broker's."""
    if category == "data_movement" and "transport" in point:
        return BROKER_MOVEMENT
    fused = any(m.endswith(FUSED_SUFFIX) for m in point.get("triton_vs_stats", {}))
    return (REMEDY_FUSED if fused else REMEDY)[category]


def outside_dnn(summary: dict[str, Any]) -> list[str]:
    """One line per placement and size: the share of end-to-end time spent outside the DNN at
    the lowest concurrency measured (and at the highest), the category that takes most of it
    and what to change first (`REMEDY`)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in summary["points"]:
        if p["categories"]:
            groups.setdefault((p["placement"], p["size"]), []).append(p)
    lines = []
    for (placement, size), points in groups.items():
        low = min(points, key=lambda p: p["concurrency"])
        high = max(points, key=lambda p: p["concurrency"])
        share = 1 - low["categories"][INFERENCE]["share"]
        others = [c for c in CATEGORIES if c != INFERENCE]
        top = max(others, key=lambda c: low["categories"][c]["share"])
        line = (
            f"{placement} {size}: {share:.0%} of end-to-end outside the DNN at concurrency "
            f"{low['concurrency']}"
        )
        if high is not low:
            line += f" ({1 - high['categories'][INFERENCE]['share']:.0%} at {high['concurrency']})"
        top_share = low["categories"][top]["share"]
        line += f"; most in {top.replace('_', ' ')} ({top_share:.0%})"
        lines.append(line + (f": {remedy(low, top)}" if share >= 0.5 else ": the DNN leads"))
    return lines


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


def _stage_ms(point: dict[str, Any]) -> dict[str, float]:
    """Mean ms per request charged to each ensemble's models (names ``<ensemble>_<role>``)."""
    return {
        ensemble: sum(
            ms for name, ms in point["spans_ms"].items() if name.startswith(f"{ensemble}_")
        )
        for ensemble in point["ensemble"].split("+")
    }


def advise_broker_size(size: str, points: Sequence[dict[str, Any]]) -> str:
    """One sentence for one image size of a run across Kafka: what the broker hops cost beside
    the stages, from the lowest to the highest concurrency measured, and what to change."""
    measured = sorted((p for p in points if p["categories"]), key=lambda p: p["concurrency"])
    if not measured:
        return f"{size}: no request completed."
    low, top = measured[0], measured[-1]
    cats = top["categories"]
    e2e_ms = cats[END_TO_END]["mean_ms"]
    transit_share = top["broker_transit_ms"] / e2e_ms if e2e_ms else 0.0
    stages = _stage_ms(top)
    slowest = max(stages, key=lambda s: stages[s])
    facts = (
        f"at concurrency {top['concurrency']} {top['images_per_s']:.1f} img/s"
        + (f" ({top['crops_per_s']:.1f} crops/s)" if top["crops_per_s"] else "")
        + f", p50 {_p50(top):.0f} ms; broker transit "
        f"{top['broker_transit_ms']:.1f} ms per request ({transit_share:.0%} of end-to-end), "
        f"consumer wait {top['consumer_wait_ms']:.1f} ms; Triton per request "
        + ", ".join(f"{s} {ms:.0f} ms" for s, ms in stages.items())
    )
    queueing = (low["categories"]["queueing"]["share"], cats["queueing"]["share"])
    inference = (low["categories"]["inference"]["mean_ms"], cats["inference"]["mean_ms"])
    gain = top["images_per_s"] / low["images_per_s"] - 1 if low["images_per_s"] else 0.0
    scaled = f"from concurrency {low['concurrency']} to {top['concurrency']}"
    if transit_share >= 0.25:
        verdict = (
            "the broker hops are a large part: fewer hops (serve the stages as one ensemble) or "
            "larger batches per poll would buy the most"
        )
    elif top is not low and gain < -CLEAR_GAIN and inference[1] >= COMPUTE_GROWTH * inference[0]:
        verdict = (
            f"each image's compute got dearer with load: throughput {gain:+.0%} while inference "
            f"per request grew ×{inference[1] / inference[0]:.1f} ({inference[0]:.0f} → "
            f"{inference[1]:.0f} ms) {scaled}, so the stages' DNNs likely compete for the same "
            "cores: give them fewer threads each (together no more than the cores) or a GPU; "
            "more workers or partitions will not help"
        )
    elif top is not low and queueing[1] > queueing[0] + CLEAR_GAIN and gain < 0.2:
        verdict = (
            f"the stages are saturated (queueing {queueing[0]:.0%} → {queueing[1]:.0%}, "
            f"throughput {gain:+.0%} {scaled}): give {slowest} more Triton instances or a GPU; "
            "more workers or partitions will not help"
        )
    else:
        biggest = max(CATEGORIES, key=lambda c: cats[c]["share"])
        verdict = (
            f"Kafka is not where the time goes ({transit_share:.0%}); {biggest.replace('_', ' ')} "
            f"is ({cats[biggest]['share']:.0%}), most of it in {slowest}"
        )
    return f"{size}: {verdict}: {facts}."


def broker_advice(summary: dict[str, Any]) -> list[str]:
    """One line per image size of a run across Kafka, in the sweep's order."""
    sizes: dict[str, list[dict[str, Any]]] = {}
    for p in summary["points"]:
        sizes.setdefault(p["size"], []).append(p)
    return [f"{summary['pipeline']} {advise_broker_size(size, pts)}" for size, pts in sizes.items()]
