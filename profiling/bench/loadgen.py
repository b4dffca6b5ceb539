"""`cvserve bench loadgen`: cvserve's load generator held to perf_analyzer, side by side.

One served model or ensemble, the same images, the same concurrency: cvserve's closed loop
(`profiling.load`, the client every cvserve benchmark uses) and Triton's perf_analyzer (from the
tritonclient wheel) in alternating rounds, each run bracketed by settled readings of the
statistics API, so both report the server-side queue and compute per composing model the same
way. The ratio cvserve / perf_analyzer is taken per round and concurrency (the two runs back to
back); its median over the rounds, with their min–max (`profiling.bench.rounds`), shows a
regression of cvserve's client; the split of each model, compared between the two
clients' runs, shows whether they load the server alike.

perf_analyzer here needs Debian's ``libb64-0d`` and a ``libcudart.so.12`` (the pytriton wheel
carries one under a hashed name; `perf_analyzer_env` links it): without them the benchmark says
why and measures cvserve's client alone.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cvserve.deploy.triton_grpc import grpc_client
from cvserve.profiling import tritonstats
from cvserve.profiling.bench.rounds import ORDER_RULE, Spread, per_round_ratios, round_order
from cvserve.profiling.load import closed_loop, warm_up
from cvserve.profiling.machine import machine_info, write_report
from cvserve.profiling.model_profile import model_senders, plan_model, split_of

DEFAULT_CONCURRENCY: tuple[int, ...] = (1, 4, 8)
DEFAULT_ROUNDS = 3  # odd: the median is a round's own ratio
SPLIT_TOLERANCE = 0.10  # a model's share of the time may differ this much between the clients


def perf_analyzer_env(workdir: Path) -> tuple[Path, dict[str, str]] | str:
    """perf_analyzer's path and environment, or why it cannot run here (one line)."""
    binary = Path(sys.executable).parent / "perf_analyzer"
    if not binary.exists():
        return f"perf_analyzer is not at {binary} (pip install tritonclient[all]==2.51.0)"
    env = dict(os.environ)
    libs = sorted(Path(sys.prefix).glob("lib/python3*/site-packages/nvidia_pytriton.libs"))
    cudart = sorted(libs[0].glob("libcudart-*.so.12*")) if libs else []
    if cudart:
        folder = workdir / "perf_analyzer_libs"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / "libcudart.so.12"
        if not link.exists():
            link.symlink_to(cudart[0])
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(folder), env.get("LD_LIBRARY_PATH")]))
    probe = subprocess.run(
        [str(binary), "--version"], env=env, capture_output=True, text=True, timeout=60
    )
    if "error while loading shared libraries" in probe.stderr:
        missing = probe.stderr.split("shared libraries:")[-1].split(":")[0].strip()
        hint = "apt-get install libb64-0d" if "b64" in missing else "see FINDINGS: perf_analyzer"
        return f"perf_analyzer cannot start: {missing} is missing ({hint})"
    return binary, env


def input_data(plan: Any, images: Sequence[bytes]) -> dict[str, Any]:
    """perf_analyzer's ``--input-data`` JSON: one entry per image for an encoded-image input."""
    (image_input,) = [i for i in plan.inputs if i.image]
    entries = []
    for image in images:
        if image_input.datatype == "BYTES":
            value = {"b64": base64.b64encode(image).decode()}
            entries.append({image_input.name: value})
        else:
            entries.append({image_input.name: {"content": list(image), "shape": [len(image)]}})
    return {"data": entries}


def run_perf_analyzer(
    binary: Path,
    env: dict[str, str],
    url: str,
    model: str,
    data: Path,
    concurrency: int,
    duration_s: float,
    workdir: Path,
) -> dict[str, float]:
    """One perf_analyzer run at ``concurrency``: its infer/s and p50/p99 (ms), from its CSV.
    Three windows of ``duration_s / 3`` (perf_analyzer averages its last three)."""
    report = workdir / f"pa-{model}-c{concurrency}.csv"
    window_ms = max(500, int(duration_s * 1000 / 3))
    command = [str(binary), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data)]
    command += ["--concurrency-range", f"{concurrency}:{concurrency}", "-p", str(window_ms)]
    command += ["-s", "100", "-r", "6", "-f", str(report)]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60 + 20 * duration_s
    )
    if done.returncode != 0 or not report.exists():
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"perf_analyzer failed (rc {done.returncode}): {last[0]}")
    with report.open() as f:
        (row,) = list(csv.DictReader(f))
    return {
        "images_per_s": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1e3,
        "p99_ms": float(row["p99 latency"]) / 1e3,
    }


def _cvserve_run(make_sender: Any, concurrency: int, duration_s: float) -> dict[str, float]:
    result = closed_loop(make_sender, concurrency, duration_s=duration_s)
    if result.errors:
        raise RuntimeError(f"{result.errors} of cvserve's requests failed")
    return {
        "images_per_s": result.throughput,
        "p50_ms": result.percentile_ms(50),
        "p99_ms": result.percentile_ms(99),
    }


def split_shares(split: dict[str, Any], models: Sequence[str]) -> dict[str, float]:
    """Each of ``models``' share of their summed per-request time (queue + compute, ms)."""
    totals = {m: sum(split[m]["mean_ms"][p] for p in tritonstats.PHASES) for m in models}
    whole = sum(totals.values())
    return {m: t / whole if whole else 0.0 for m, t in totals.items()}


def compute_ms(split: dict[str, Any], models: Sequence[str]) -> float:
    """Per request, the ms ``models`` spent computing (input, inference, output; no queue)."""
    phases = ("compute_input", "compute_infer", "compute_output")
    return sum(split[m]["mean_ms"][p] for m in models for p in phases)


def split_difference(a: dict[str, Any], b: dict[str, Any], models: Sequence[str]) -> float:
    """Largest difference of any composing model's share of the time between two runs' splits
    (0.05: five percentage points)."""
    sa, sb = split_shares(a, models), split_shares(b, models)
    return max(abs(sa[m] - sb[m]) for m in models)


def bench_loadgen(
    url: str,
    model: str,
    images: Sequence[bytes],
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY,
    rounds: int = DEFAULT_ROUNDS,
    duration_s: float = 5.0,
    out: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Both clients on ``model`` at ``url``, alternating per round; prints the table, writes the
    JSON report."""
    console = console or Console(width=None if sys.stdout.isatty() else 140)
    workdir = Path(tempfile.mkdtemp(prefix="cvserve-loadgen-"))
    found = perf_analyzer_env(workdir)
    unavailable = found if isinstance(found, str) else None
    if unavailable:
        console.print(f"  {unavailable}: measuring cvserve's client alone")
    client = grpc_client(url)
    runs: list[dict[str, Any]] = []
    try:
        plan = plan_model(client, model)
        if not plan.takes_images:
            raise ValueError(f"{model} takes no encoded image; loadgen sends images")
        data = workdir / "input-data.json"
        data.write_text(json.dumps(input_data(plan, images)))
        make_sender = model_senders(url, plan, list(images), 16)
        warm_up(make_sender, 2 * max(concurrency))
        clients = ["cvserve"] + ([] if unavailable else ["perf_analyzer"])
        for r in range(rounds):
            order = round_order(r, clients)
            for c in concurrency:
                for who in order:
                    before = tritonstats.fetch_settled(client, list(plan.models))
                    if who == "cvserve":
                        measured = _cvserve_run(make_sender, c, duration_s)
                    else:
                        binary, env = found  # type: ignore[misc]
                        measured = run_perf_analyzer(
                            binary, env, url, model, data, c, duration_s, workdir
                        )
                    after = tritonstats.fetch_settled(client, list(plan.models))
                    split = {m: split_of(after[m] - before[m]) for m in plan.models}
                    runs.append(
                        {"round": r, "client": who, "concurrency": c, **measured, "models": split}
                    )
                    console.print(
                        f"  round {r + 1} c={c} {who}: {measured['images_per_s']:.1f} img/s, "
                        f"p50 {measured['p50_ms']:.1f} ms"
                    )
    finally:
        client.close()
    composing = list(plan.composing) or list(plan.models)
    summary = summarize_runs(runs, concurrency, unavailable is None, composing)
    report = {
        "benchmark": "loadgen",
        "model": model,
        "server": url,
        "images": len(images),
        "rounds": rounds,
        "duration_s": duration_s,
        "order": f"cvserve, perf_analyzer at each concurrency: {ORDER_RULE}",
        "ratio_rule": "cvserve / perf_analyzer per round (the two runs back to back); ratio: "
        "their median; ratio_spread: median, min, max",
        "perf_analyzer": unavailable or "used",
        "split_tolerance": SPLIT_TOLERANCE,
        "split_rule": "max over composing models of |share of queue+compute, cvserve run - "
        "perf_analyzer run|",
        "composing_models": composing,
        "machine": machine_info(),
        "summary": summary,
        "runs": runs,
    }
    _print_table(console, model, summary, rounds)
    write_report(report, f"bench-loadgen-{model}", out, console=console)
    return report


def summarize_runs(
    runs: list[dict[str, Any]], concurrency: Sequence[int], both: bool, composing: list[str]
) -> list[dict[str, Any]]:
    """Per concurrency: each client's images/s (median, min, max of the rounds), p50 and p50
    over the server's compute (medians); with both clients, ``ratio`` = the median of the
    per-round cvserve / perf_analyzer ratios with ``ratio_spread``, and the largest split
    difference of any round."""
    rows = []
    for c in concurrency:
        at = [run for run in runs if run["concurrency"] == c]
        row: dict[str, Any] = {"concurrency": c}
        for who in ("cvserve", "perf_analyzer") if both else ("cvserve",):
            rates = [run["images_per_s"] for run in at if run["client"] == who]
            row[who] = {
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "p50_ms": statistics.median(run["p50_ms"] for run in at if run["client"] == who),
                # End to end over the server's compute: what serving adds to the work itself.
                "p50_over_compute": statistics.median(
                    run["p50_ms"] / compute_ms(run["models"], composing)
                    for run in at
                    if run["client"] == who
                ),
            }
        if both:
            ours = [run for run in at if run["client"] == "cvserve"]
            theirs = [run for run in at if run["client"] == "perf_analyzer"]
            if [run["round"] for run in ours] != [run["round"] for run in theirs]:
                raise ValueError(f"concurrency {c}: the two clients ran different rounds")
            ratios = per_round_ratios(
                [run["images_per_s"] for run in ours], [run["images_per_s"] for run in theirs]
            )
            spread = Spread.of(ratios)
            row["ratio"] = spread.median
            row["ratio_spread"] = spread.to_dict()
            pairs = zip(ours, theirs, strict=True)
            row["split_difference"] = max(
                split_difference(a["models"], b["models"], composing) for a, b in pairs
            )
            row["split_agrees"] = row["split_difference"] <= SPLIT_TOLERANCE
        rows.append(row)
    return rows


def _print_table(console: Console, model: str, summary: list[dict[str, Any]], rounds: int) -> None:
    table = Table(
        title=f"cvserve bench loadgen {model}: images/s, medians of {rounds} alternating rounds "
        "\\[min-max]; cvserve / PA: median of the per-round ratios \\[min-max]"
    )
    columns = ("conc", "cvserve", "perf_analyzer", "cvserve / PA", "split diff (max)")
    for column in (*columns, "p50 / compute"):
        table.add_column(column, justify="right", no_wrap=column in columns[1:4])

    def cell(stats: dict[str, float] | None) -> str:
        if not stats:
            return "-"
        return f"{stats['median']:.1f} [{stats['min']:.1f}-{stats['max']:.1f}]"

    for row in summary:
        table.add_row(
            str(row["concurrency"]),
            cell(row.get("cvserve")),
            cell(row.get("perf_analyzer")),
            Spread.from_dict(row["ratio_spread"]).cell() if "ratio_spread" in row else "-",
            f"{row['split_difference'] * 100:.1f} pp" if "split_difference" in row else "-",
            " / ".join(
                f"{row[who]['p50_over_compute']:.2f}"
                for who in ("cvserve", "perf_analyzer")
                if who in row
            ),
        )
    console.print(table)
