"""A sweep's run folder: every request as CSV and JSON, the summary, a Chrome/Perfetto trace of
sample requests, and the terminal table.

``runs/profile-<time>/``: ``summary.json`` (points, clocks, advice, machine), ``requests.csv`` /
``requests.json`` (one row per request; the JSON adds exclusive ms per span name and kind),
``trace.json`` (``traceEvents``; open in ui.perfetto.dev or chrome://tracing), ``summary.txt`` and
the plots (`profiling.plots`).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from cvserve.profiling.advice import broker_advice, outside_dnn, placement_advice
from cvserve.profiling.attribution import END_TO_END
from cvserve.profiling.categories import CATEGORIES, HEADERS
from cvserve.profiling.machine import machine_info
from cvserve.profiling.sweep_results import PointResult, SweepRun

SUMMARY, REQUESTS_CSV, REQUESTS_JSON, CHROME_TRACE = (
    "summary.json",
    "requests.csv",
    "requests.json",
    "trace.json",
)
REQUEST_COLUMNS: tuple[str, ...] = (
    "placement",
    "size",
    "concurrency",
    "request_id",
    "trace_id",
    "start_ms",
    "end_to_end_ms",
    *(f"{c}_ms" for c in CATEGORIES),
    "unattributed_ms",
    "coverage",
    "request_bytes",
    "triton_traced",
    "skew_us",
)
CLOCKS = {
    "client": "CLOCK_MONOTONIC (time.monotonic_ns) of this host",
    "triton": "steady_clock = CLOCK_MONOTONIC of the same host: used as is, no conversion",
    "skew_check": "per request, Triton's REQUEST_START >= client call start and "
    "INFER_RESPONSE_COMPLETE <= call end; max_triton_skew_us is the worst overshoot",
}


def run_folder(root: Path = Path("runs")) -> Path:
    folder = root / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def request_rows(result: PointResult) -> Iterable[dict[str, Any]]:
    """One flat row per request of ``result`` (the CSV columns)."""
    p = result.point
    for record in result.records:
        a, trace = record.attribution, record.trace
        yield {
            "placement": p.placement,
            "size": p.size,
            "concurrency": p.concurrency,
            "request_id": trace.request_id,
            "trace_id": trace.trace_id,
            "start_ms": round((trace.start_ns - result.start_ns) / 1e6, 3),
            "end_to_end_ms": round(a.end_to_end_ns / 1e6, 4),
            **{f"{c}_ms": round(a.by_category[c] / 1e6, 4) for c in CATEGORIES},
            "unattributed_ms": round(a.unattributed_ns / 1e6, 4),
            "coverage": round(a.coverage, 5),
            "request_bytes": int(trace.attributes.get("request_bytes", 0)),
            "triton_traced": record.triton_traced,
            "skew_us": round(record.skew_ns / 1e3, 3),
        }


def summary_of(run: SweepRun) -> dict[str, Any]:
    """The run's summary, its advice included."""
    points = [r.summary() for r in run.results]
    summary = {
        "pipeline": run.pipeline,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "server": run.server,
        "config": {
            "placements": list(run.config.placements),
            "sizes": [f"{w}x{h}" for w, h in run.config.sizes],
            "concurrency": list(run.config.concurrency),
            "duration_s": run.config.duration_s,
            "split_preprocess": run.config.split_preprocess,
        },
        "transport": run.transport or {"kind": "grpc"},
        "skipped": run.skipped,
        "clocks": {
            **CLOCKS,
            **run.clocks,
            "max_triton_skew_us": max((p["max_skew_ns"] for p in points), default=0) / 1e3,
        },
        "categories": list(CATEGORIES),
        "points": points,
    }
    advise = broker_advice if summary["transport"]["kind"] == "kafka" else placement_advice
    summary["advice"] = advise(summary)
    summary["outside_dnn"] = outside_dnn(summary)
    return summary


def chrome_trace(results: Sequence[PointResult], samples: int = 3) -> dict[str, Any]:
    """Chrome trace-event JSON of the first ``samples`` requests of every point: one process
    per component (client, broker, worker:<stage>, triton), one thread per request and lane
    (a fan-out's crops run side by side)."""
    chosen = [(r, rec) for r in results for rec in r.records[:samples]]
    if not chosen:
        return {"traceEvents": [], "displayTimeUnit": "ms"}
    t0 = min(rec.trace.start_ns for _, rec in chosen)
    pids: dict[str, int] = {}
    tids: dict[tuple[int, int], int] = {}
    events: list[dict[str, Any]] = []
    for index, (result, record) in enumerate(chosen):
        for span in record.trace.all_spans():
            if span.process not in pids:
                pids[span.process] = len(pids) + 1
                events.append(
                    {
                        "name": "process_name",
                        "ph": "M",
                        "pid": pids[span.process],
                        "args": {"name": span.process},
                    }
                )
            tid = tids.setdefault((index, span.lane), len(tids) + 1)
            events.append(
                {
                    "name": span.name,
                    "cat": span.category,
                    "ph": "X",
                    "ts": (span.start_ns - t0) / 1e3,
                    "dur": span.duration_ns / 1e3,
                    "pid": pids[span.process],
                    "tid": tid,
                    "args": {"kind": span.kind, "request_id": record.trace.request_id},
                }
            )
        for (owner, lane), tid in tids.items():
            if owner != index:
                continue
            name = f"{result.point.label} {record.trace.request_id}"
            for pid in pids.values():
                events.append(
                    {
                        "name": "thread_name",
                        "ph": "M",
                        "pid": pid,
                        "tid": tid,
                        "args": {"name": name if lane == 0 else f"{name} lane {lane}"},
                    }
                )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_run(folder: Path, run: SweepRun) -> dict[str, Any]:
    """Write the run folder's data files; returns the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = summary_of(run)
    (folder / SUMMARY).write_text(json.dumps(summary, indent=2))
    rows = []
    with (folder / REQUESTS_CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=REQUEST_COLUMNS)
        writer.writeheader()
        for result in run.results:
            for row, record in zip(request_rows(result), result.records, strict=True):
                writer.writerow(row)
                a = record.attribution
                spans = {k: round(v / 1e6, 4) for k, v in a.by_span.items()}
                kinds = {k: round(v / 1e6, 4) for k, v in a.by_kind.items()}
                rows.append({**row, "spans_ms": spans, "kinds_ms": kinds})
    (folder / REQUESTS_JSON).write_text(json.dumps(rows))
    (folder / CHROME_TRACE).write_text(json.dumps(chrome_trace(run.results)))
    return summary


def summary_table(summary: dict[str, Any]) -> Table:
    """Throughput, latency and each category's share of end-to-end time, per point."""
    machine = summary["machine"]
    kafka = summary.get("transport", {}).get("kind") == "kafka"
    crops = kafka and any(p.get("crops_per_s") for p in summary["points"])
    table = Table(
        title=f"cvserve profile {summary['pipeline']}{' over Kafka' if kafka else ''} — "
        f"{machine['cores']} cores, {machine['cpu']}, GPU {machine['gpu'] or 'none'}",
        caption="share of end-to-end time: "
        + ", ".join(f"{HEADERS[c]} = {c.replace('_', ' ')}" for c in CATEGORIES)
        + "; unattr. = worst request's share no span covered",
    )
    columns = ("placement", "size", "conc", "img/s", *(("crops/s",) if crops else ()))
    for column in (*columns, "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for category in CATEGORIES:
        table.add_column(HEADERS[category], justify="right")
    table.add_column("unattr.", justify="right")
    for p in summary["points"]:
        cats = p["categories"]
        if not cats:
            continue
        table.add_row(
            p["placement"],
            p["size"],
            str(p["concurrency"]),
            f"{p['images_per_s']:.1f}",
            *((f"{p['crops_per_s']:.1f}",) if crops else ()),
            f"{cats[END_TO_END]['p50_ms']:.1f}",
            f"{cats[END_TO_END]['p99_ms']:.1f}",
            *(f"{cats[c]['share']:.0%}" for c in CATEGORIES),
            f"{p['unattributed_share']['max']:.1%}",
        )
    return table
