"""``cvserve bench profiling``: throughput with profiling on vs off, on the same server.

On: every request recorded by the client and traced by Triton (level TIMESTAMPS, rate 1);
traces are joined and attributed after each run, outside the timed window. Off: the same client
code with recording off and Triton tracing off. Runs come in back-to-back pairs (off, on, then
on, off, …) so that drift of a shared machine hits both alike; the median pair ratio decides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cvserve.deploy.triton_grpc import grpc_client
from cvserve.models.params import DnnParams
from cvserve.pipelines.catalog import pipeline
from cvserve.pipelines.variants import FUSED_PARTS, is_fused, unfused, with_stage_times
from cvserve.profiling import tritonstats
from cvserve.profiling.categories import FUSED, ROLE_CATEGORY
from cvserve.profiling.load import closed_loop
from cvserve.profiling.machine import machine_info, write_report
from cvserve.profiling.sweep import join_and_attribute, serve_traced, write_images
from cvserve.profiling.sweep_plan import SERVER_CPU, Target
from cvserve.profiling.trace import Trace
from cvserve.profiling.tracedclient import TracedSender
from cvserve.profiling.tritontrace import TritonTracer

BUDGET = 0.03  # the profiler may cost at most this share of throughput
SPLIT_AGREEMENT = 0.10  # a fused model's split may differ from the ensemble's by this, per stage
SPLIT: tuple[str, ...] = tuple(ROLE_CATEGORY[role] for role in FUSED_PARTS)
_PAIR_ORDERS = (("off", "on"), ("on", "off"))


def recording_cost_us(requests: int = 2000) -> float:
    """Client-side cost of recording one request's spans (µs): a root and the eight spans a
    traced request records, timed in a loop."""
    kinds = ("read", "serialize", "send", "receive", "deserialize", "decode", "queue", "overhead")
    start = time.perf_counter()
    for i in range(requests):
        trace = Trace(f"cost-{i}").begin()
        for kind in kinds:
            with trace.span(kind):
                pass
        trace.finish()
    return (time.perf_counter() - start) / requests * 1e6


def group_cpu_s(pgid: int | None) -> float:
    """CPU seconds (user + system) used so far by the live processes of group ``pgid``: the
    embedded tritonserver and its python-backend stubs. 0.0 without a group."""
    if pgid is None:
        return 0.0
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, …
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _server(specs: list[Any], triton_url: str | None) -> Iterator[tuple[str, int | None]]:
    """(gRPC url, process group of the server when it is ours)."""
    if triton_url:
        yield triton_url, None
        return
    with (
        tempfile.TemporaryDirectory(prefix="cvserve-bench-profiling-") as tmp,
        serve_traced(specs, Path(tmp)) as server,
    ):
        assert server.process is not None
        yield server.grpc_url, server.process.pid


def _measure(
    url: str,
    spec: Any,
    target: Target,
    tracer: TritonTracer,
    images: list[Path],
    mode: str,
    concurrency: int,
    duration_s: float,
    tag: str,
    pgid: int | None,
    stats_client: Any = None,
) -> dict[str, Any]:
    """One run of ``mode``; with ``stats_client`` (profiling on) also each model's images per
    execution over the run, from Triton's statistics."""
    senders: list[TracedSender] = []
    record = mode == "on"

    def make_sender() -> TracedSender:
        sender = TracedSender(url, spec, images, record=record, tag=f"{tag}c{len(senders)}")
        senders.append(sender)
        return sender

    traced = 0
    split: dict[str, float] = {}
    batches: dict[str, float] = {}
    models = [s.name for s in target.ensemble.stages]
    before = tritonstats.fetch_settled(stats_client, models) if record and stats_client else {}
    cpu = (time.process_time(), group_cpu_s(pgid))
    if record:
        with tracer.tracing():
            load = closed_loop(make_sender, concurrency, duration_s=duration_s)
        cpu = (time.process_time() - cpu[0], group_cpu_s(pgid) - cpu[1])
        if before:
            after = tritonstats.fetch_settled(stats_client, models)
            ran = {m: after[m] - before[m] for m in models}
            batches = {m: st.requests / st.executions for m, st in ran.items() if st.executions}
        traces = [t for s in senders for t in s.traces]
        found = tracer.collect([t.request_id for t in traces])
        records = join_and_attribute(traces, found, target.roles)
        traced = sum(r.triton_traced for r in records)
        split = {
            c: round(statistics.median(r.attribution.by_category[c] for r in records) / 1e6, 4)
            for c in SPLIT
            if records
        }
    else:
        load = closed_loop(make_sender, concurrency, duration_s=duration_s)
        cpu = (time.process_time() - cpu[0], group_cpu_s(pgid) - cpu[1])
    requests = max(1, load.requests)
    return {
        "mode": mode,
        "images_per_s": round(load.throughput, 2),
        "requests": load.requests,
        "errors": load.errors,
        "traced": traced,
        "median_ms": split,  # per request, of the stages' categories (profiling on)
        # the same per image of the batch that did the work (batches differ fused and apart)
        "per_image_ms": per_image(split, target.roles, batches),
        "images_per_execution": {m: round(b, 3) for m, b in batches.items()},
        "client_cpu_ms_per_request": round(cpu[0] / requests * 1e3, 4),
        "server_cpu_ms_per_request": round(cpu[1] / requests * 1e3, 4) if pgid else None,
    }


def per_image(
    split: Mapping[str, float], roles: Mapping[str, str], batches: Mapping[str, float]
) -> dict[str, float]:
    """``split`` (ms per request by category of `SPLIT`) divided by the images per execution of
    the model doing that work (``batches``; a fused model does all three; 1 where unknown): a
    request is charged its batch's whole compute, so this is the work per image."""
    of_category: dict[str, float] = {}
    for model, role in roles.items():
        for category in SPLIT if role == FUSED else (ROLE_CATEGORY.get(role),):
            if category in SPLIT:
                of_category[category] = batches.get(model, 1.0)
    return {c: round(ms / of_category.get(c, 1.0), 4) for c, ms in split.items()}


def bench_profiling(
    pipeline_name: str = "classify",
    arch: str | None = None,
    size: tuple[int, int] = (640, 480),
    concurrency: int = 4,
    duration_s: float = 5.0,
    pairs: int = 6,
    out: Path | None = None,
    triton_url: str | None = None,
    console: Console | None = None,
    fuse_stages: bool | None = None,
) -> dict[str, Any]:
    """Measure ``pairs`` back-to-back off/on pairs, print a table, write JSON (``out`` or
    ``runs/bench-profiling-<time>.json``). The verdict uses the median of the pairs' on/off
    ratios: pairing cancels the slow drift of a shared machine.

    The pipeline is served as clients call it (off) and as the profiler calls it (on: its
    models' own times returned, `with_stage_times`). A fused pipeline (``fuse_stages``, or as
    tuned) is also served with its stages apart, each reporting its own work; each pair then
    also profiles the stages apart, and the fused split (ms in preprocessing, inference,
    postprocessing, per request and per image) is compared with theirs per pair
    (`split_agreement`, `SPLIT_AGREEMENT`)."""
    console = console or Console()
    spec = pipeline(pipeline_name, arch=arch, fuse_stages=fuse_stages)
    targets = {"off": Target.of(SERVER_CPU, spec, spec), "on": Target.of(SERVER_CPU, spec, spec)}
    if triton_url is None:  # a running server is profiled as it is
        profiled = dataclasses.replace(with_stage_times(spec), name=f"{spec.name}_profiled")
        targets["on"] = Target.of(SERVER_CPU, profiled, spec)
    fused = is_fused(spec) and triton_url is None
    if fused:
        apart = with_stage_times(unfused(spec))
        apart = dataclasses.replace(apart, name=f"{spec.name}_apart")
        targets["apart"] = Target.of(SERVER_CPU, apart, apart)
    runs: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="cvserve-bench-images-") as tmp,
        _server(
            list({t.ensemble.name: t.ensemble for t in targets.values()}.values()), triton_url
        ) as (url, pgid),
    ):
        images = write_images([size], Path(tmp), 4)[size]
        client = grpc_client(url)
        try:
            tracer = TritonTracer.attach(client)
            for target in targets.values():
                warm = TracedSender(url, target.ensemble, images, record=False)
                for i in range(5):
                    warm(i)
                warm.close()
            for pair in range(pairs):
                for mode in (*_PAIR_ORDERS[pair % 2], *(["apart"] if fused else [])):
                    target = targets[mode]
                    run = _measure(
                        url,
                        target.ensemble,
                        target,
                        tracer,
                        images,
                        "off" if mode == "off" else "on",
                        concurrency,
                        duration_s,
                        tag=f"b{len(runs)}",
                        pgid=pgid,
                        stats_client=client,
                    )
                    run["mode"] = mode
                    runs.append({"pair": pair, **run})
                    traced = f", {run['traced']} traced" if mode == "on" else ""
                    console.print(
                        f"  pair {pair} {mode:>3}: {run['images_per_s']:.1f} img/s "
                        f"({run['requests']} requests{traced})"
                    )
        finally:
            client.close()
    agreement = split_agreement(runs, pairs) if fused else None
    ratios = []
    for pair in range(pairs):
        rate = {r["mode"]: r["images_per_s"] for r in runs if r["pair"] == pair}
        ratios.append(rate["on"] / rate["off"] if rate["off"] else float("nan"))
    medians = {
        m: statistics.median(r["images_per_s"] for r in runs if r["mode"] == m)
        for m in ("off", "on")
    }
    ratio = statistics.median(ratios)
    cost_us = recording_cost_us()
    cpu = {
        side: {
            m: statistics.median(r[f"{side}_cpu_ms_per_request"] for r in runs if r["mode"] == m)
            for m in ("off", "on")
        }
        for side in ("client", "server")
        if runs and runs[0][f"{side}_cpu_ms_per_request"] is not None
    }
    report = {
        "benchmark": "profiling overhead",
        "pipeline": pipeline_name,
        "arch": unfused(spec).stage_by_role("inference").params_as(DnnParams).arch,
        "size": f"{size[0]}x{size[1]}",
        "concurrency": concurrency,
        "duration_s": duration_s,
        "machine": machine_info(),
        "runs": runs,
        "pair_ratios": [round(r, 4) for r in ratios],
        "median_images_per_s": medians,
        "on_over_off": round(ratio, 4),
        "recording_cost_us_per_request": round(cost_us, 2),
        "median_cpu_ms_per_request": cpu,
        "within_budget": ratio >= 1 - BUDGET,
        "budget": BUDGET,
        "fused": is_fused(spec),
        "fused_split_vs_apart": agreement,
    }
    table = Table(
        title=f"cvserve bench profiling — {pipeline_name} {report['arch']} {report['size']}, "
        f"concurrency {concurrency}, {report['machine']['cores']} cores",
        caption="on/off: per pair (runs back to back); verdict on the median ratio",
    )
    for column in ("pair", "off img/s", "on img/s", "on/off"):
        table.add_column(column, justify="right")
    for pair, pair_ratio in enumerate(ratios):
        rate = {r["mode"]: r["images_per_s"] for r in runs if r["pair"] == pair}
        table.add_row(str(pair), f"{rate['off']:.1f}", f"{rate['on']:.1f}", f"{pair_ratio:.3f}")
    table.add_row("median", f"{medians['off']:.1f}", f"{medians['on']:.1f}", f"{ratio:.3f}")
    console.print(table)
    verdict = "within" if report["within_budget"] else "OUTSIDE"
    console.print(
        f"on / off = {ratio:.3f} (pairs {min(ratios):.3f}–{max(ratios):.3f}): {verdict} the "
        f"{BUDGET:.0%} budget; client span recording costs {cost_us:.1f} µs per request"
    )
    for side, values in cpu.items():
        console.print(
            f"{side} CPU per request: off {values['off']:.2f} ms, on {values['on']:.2f} ms "
            f"({values['on'] / values['off'] - 1:+.1%})"
            if values["off"]
            else f"{side} CPU per request: off {values['off']:.2f} ms, on {values['on']:.2f} ms"
        )
    if agreement is not None:
        _print_agreement(console, agreement)
    write_report(report, "bench-profiling", out, console=console)
    return report


def split_agreement(runs: list[dict[str, Any]], pairs: int) -> dict[str, Any]:
    """Per category of `SPLIT`: the fused model's median ms (profiling on) over the stages
    apart's, per pair, and their median — per request (what a request is charged: its batch's
    compute) and per image (divided by each model's images per execution: the same work when
    the two batch differently); ``within`` when every category's per-image median ratio lies
    within `SPLIT_AGREEMENT` of 1."""
    views: dict[str, dict[str, Any]] = {}
    for view in ("median_ms", "per_image_ms"):
        rows = {}
        for category in SPLIT:
            per_pair = []
            for pair in range(pairs):
                ms = {r["mode"]: r[view].get(category) for r in runs if r["pair"] == pair}
                if ms.get("on") and ms.get("apart"):
                    per_pair.append(ms["on"] / ms["apart"])
            rows[category] = {
                "fused_ms": statistics.median(r[view][category] for r in runs if r["mode"] == "on"),
                "apart_ms": statistics.median(
                    r[view][category] for r in runs if r["mode"] == "apart"
                ),
                "pair_ratios": [round(x, 4) for x in per_pair],
                "ratio": round(statistics.median(per_pair), 4) if per_pair else None,
            }
        views[view] = rows
    per_image_rows = views["per_image_ms"]
    within = all(
        r["ratio"] is not None and abs(r["ratio"] - 1) <= SPLIT_AGREEMENT
        for r in per_image_rows.values()
    )
    return {
        "categories": views["median_ms"],
        "per_image": per_image_rows,
        "within": within,
        "bound": SPLIT_AGREEMENT,
    }


def _print_agreement(console: Console, agreement: dict[str, Any]) -> None:
    table = Table(
        title="fused split vs the same stages apart (profiling on)",
        caption="fused / apart: median of the per-pair ratios [min-max]; per image: divided by "
        "the images per execution of the model doing the work",
    )
    for column in ("category", "fused ms", "apart ms", "per request", "per image"):
        table.add_column(column, justify="right")

    def cell(row: dict[str, Any]) -> str:
        spread = row["pair_ratios"]
        return f"{row['ratio']:.3f} [{min(spread):.3f}-{max(spread):.3f}]" if spread else "-"

    for category, row in agreement["categories"].items():
        image = agreement["per_image"][category]
        table.add_row(
            category, f"{row['fused_ms']:.2f}", f"{row['apart_ms']:.2f}", cell(row), cell(image)
        )
    console.print(table)
    verdict = "within" if agreement["within"] else "OUTSIDE"
    console.print(
        f"fused split per image {verdict} {agreement['bound']:.0%} of the stages apart, per stage"
    )
