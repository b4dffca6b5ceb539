"""`cvserve tune` for a composite: the stage workers each stage of a multi-DNN pipeline gets,
chosen by short measured runs across Kafka.

The stages' ensembles are served as the composite's files say (each stage's own ``serving:``,
as `cvserve tune --file STAGE` chose it), in one Triton, behind one broker. From one worker per
stage, every trial measures the pipeline end to end for the `Goal` (images/s with
``concurrency`` in flight, or p50 at a rate; a request completes when the last stage's results
for every crop are read) and each stage's load from its workers' counters
(`broker.stats.WorkerStats`): **busy** = busy seconds / (workers × wall), and **rate** = records
per busy second of one worker — what one worker of the stage sustains, behind the fan-out of the
stages before it. The next trial adds a worker to the busiest stage (the next busiest if that one
is at its limit or did not help); the search stops when no stage's extra worker is better by
`tune.MARGIN`, at ``max_workers`` per stage or after ``max_trials``.

The chosen counts and each stage's rate go to the composite file's ``composite:`` entries
(``workers:``, ``rate:``): workers then start that many per stage (`StageWorkerProcesses`), the
compose file gets them as replicas and the Kubernetes manifests derive KEDA's lag per replica from
the rate (`manifests.plan`).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from cvserve.broker.routes import Route, as_route
from cvserve.broker.stats import WorkerStats
from cvserve.broker.worker_processes import StageWorkerProcesses
from cvserve.deploy.kafka import DEFAULT_PARTITIONS, kafka_version
from cvserve.pipelines.spec import PipelineSpec
from cvserve.profiling.broker_services import BrokerServices, broker_services
from cvserve.profiling.kafkaload import (
    BrokerClient,
    BrokerLoad,
    closed_loop_over_broker,
    open_loop_over_broker,
    warm_up,
)
from cvserve.profiling.machine import machine_info, write_report
from cvserve.profiling.sweep import write_images
from cvserve.profiling.tune import Goal, better, verdict

DEFAULT_MAX_WORKERS = 4  # per stage: beyond it the processes only share the same cores
DEFAULT_MAX_TRIALS = 6


@dataclass(frozen=True)
class StageLoad:
    """One stage over a measured run: ``records`` consumed by its ``workers``; ``busy`` their
    busy fraction (0..1); ``rate`` records per busy second of one worker (0: none consumed)."""

    stage: str
    workers: int
    records: int
    busy: float
    rate: float


@dataclass
class WorkersTrial:
    """One measured worker count per stage."""

    workers: dict[str, int]
    images_per_s: float = 0.0
    crops_per_s: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    incomplete: int = 0
    errors: int = 0
    stages: list[StageLoad] = field(default_factory=list)
    feasible: bool = False
    score: float = float("-inf")
    note: str = ""
    chosen: bool = False

    def busiest_first(self) -> list[str]:
        """Stage names, busiest first."""
        return [s.stage for s in sorted(self.stages, key=lambda s: -s.busy)]


Measure = Callable[[dict[str, int]], WorkersTrial]


def search_workers(
    stages: Sequence[str],
    measure: Measure,
    max_workers: int = DEFAULT_MAX_WORKERS,
    max_trials: int = DEFAULT_MAX_TRIALS,
    on_trial: Callable[[WorkersTrial], None] = lambda t: None,
) -> tuple[WorkersTrial, list[WorkersTrial]]:
    """Greedy search from one worker per stage (module doc): the best trial and every trial.
    `RuntimeError` when no trial met the goal."""
    counts = {stage: 1 for stage in stages}
    best = measure(counts)
    on_trial(best)
    trials = [best]
    tried = {tuple(sorted(counts.items()))}
    improved = True
    while improved and len(trials) < max_trials:
        improved = False
        for stage in best.busiest_first() or list(stages):
            candidate = {**best.workers, stage: best.workers[stage] + 1}
            key = tuple(sorted(candidate.items()))
            if candidate[stage] > max_workers or key in tried:
                continue
            tried.add(key)
            trial = measure(candidate)
            on_trial(trial)
            trials.append(trial)
            if better(trial, best):
                best, improved = trial, True
                break
            if len(trials) >= max_trials:
                break
    if not best.feasible:
        raise RuntimeError("no worker count met the goal; see the table")
    best.chosen = True
    return best, trials


def stage_settings(best: WorkersTrial) -> dict[str, dict[str, Any]]:
    """Stage → ``{"workers": n, "rate": records/s of one worker}`` (`pipelines.tuned`)."""
    return {
        s.stage: {"workers": s.workers, **({"rate": round(s.rate, 1)} if s.rate else {})}
        for s in best.stages
    }


def _snapshot(workers: StageWorkerProcesses) -> dict[str, list[WorkerStats]]:
    out: dict[str, list[WorkerStats]] = {}
    for worker in workers.workers:
        stats = worker.stats()
        if stats is not None:
            out.setdefault(worker.stage, []).append(stats)
    return out


def stage_loads(
    before: Mapping[str, Sequence[WorkerStats]],
    after: Mapping[str, Sequence[WorkerStats]],
    counts: Mapping[str, int],
    wall_s: float,
) -> list[StageLoad]:
    """Each stage's load between two snapshots of its workers' counters, ``wall_s`` apart."""
    loads = []
    for stage, n in counts.items():
        start = {s.pid: s for s in before.get(stage, ())}
        records = busy_ns = 0
        for stats in after.get(stage, ()):
            first = start.get(stats.pid)
            records += stats.consumed - (first.consumed if first else 0)
            busy_ns += stats.busy_ns - (first.busy_ns if first else 0)
        busy_s = busy_ns / 1e9
        loads.append(
            StageLoad(
                stage,
                n,
                records,
                busy=min(1.0, busy_s / (n * wall_s)) if wall_s else 0.0,
                rate=records / busy_s if busy_s else 0.0,
            )
        )
    return loads


def _run_load(
    client: BrokerClient, images: Sequence[Path], goal: Goal, duration_s: float
) -> BrokerLoad:
    if goal.kind == "latency":
        return open_loop_over_broker(client, images, float(goal.rate or 1.0), duration_s)
    return closed_loop_over_broker(client, images, goal.concurrency, duration_s)


def measure_composite(
    services: BrokerServices,
    pipeline: Route | str,
    counts: dict[str, int],
    images: Sequence[Path],
    goal: Goal,
    duration_s: float,
    folder: Path,
    worker_args: Sequence[str] = (),
) -> WorkersTrial:
    """One trial: ``counts`` workers per stage in a namespace of their own (fresh topics and
    groups), warmed up, then loaded for ``duration_s`` as ``goal`` says."""
    tag = "-".join(str(counts[s]) for s in as_route(pipeline).stage_names)
    namespace = f"{services.namespace}-w{tag}"
    workers = StageWorkerProcesses(
        services.bootstrap,
        pipeline,
        services.triton_url,
        namespace,
        folder / f"workers-{tag}",
        per_stage=counts,
        extra_args=tuple(worker_args),
    )
    trial = WorkersTrial(dict(counts))
    with workers, BrokerClient(services.bootstrap, pipeline, namespace) as client:
        workers.wait_running()
        warm_up(client, images, requests=2 * max(counts.values()), timeout_s=180)
        before = _snapshot(workers)
        load = _run_load(client, images, goal, duration_s)
        after = _snapshot(workers)
    trial.stages = stage_loads(before, after, counts, load.wall_s)
    trial.images_per_s, trial.crops_per_s = load.images_per_s, load.crops_per_s
    trial.incomplete, trial.errors = load.incomplete, load.errors
    latencies = [(r.completed_ns - r.trace.start_ns) / 1e6 for r in load.requests]
    if latencies:
        trial.p50_ms = float(np.percentile(latencies, 50))
        trial.p99_ms = float(np.percentile(latencies, 99))
    if load.errors or load.incomplete or not load.requests:
        trial.note = f"{load.errors} errors, {load.incomplete} incomplete"
        return trial
    judged = verdict(
        goal, trial.images_per_s, trial.p50_ms, trial.p99_ms, len(load.requests) / duration_s
    )
    trial.feasible, trial.score, trial.note = judged.feasible, judged.score, judged.note
    return trial


def describe(trial: WorkersTrial) -> str:
    workers = " ".join(f"{s}x{n}" for s, n in trial.workers.items())
    busy = " ".join(f"{s.stage} {s.busy:.0%}" for s in trial.stages)
    return (
        f"{workers}: {trial.images_per_s:.1f} img/s, {trial.crops_per_s:.1f} crops/s, "
        f"p50 {trial.p50_ms:.0f} ms, p99 {trial.p99_ms:.0f} ms, busy {busy} {trial.note}"
    ).rstrip()


def tune_workers(
    pipeline: Route | str,
    specs: Sequence[PipelineSpec],
    goal: Goal,
    size: tuple[int, int] = (640, 480),
    duration_s: float = 10.0,
    max_workers: int = DEFAULT_MAX_WORKERS,
    max_trials: int = DEFAULT_MAX_TRIALS,
    worker_args: Sequence[str] = (),
    bootstrap: str | None = None,
    triton_url: str | None = None,
    console: Console | None = None,
) -> tuple[WorkersTrial, list[WorkersTrial], BrokerServices]:
    """The best workers per stage of composite ``pipeline`` (its route; served as ``specs``; a
    broker and Triton started unless given), every trial, and the services measured."""
    pipeline = as_route(pipeline)
    console = console or Console(width=None if sys.stdout.isatty() else 140)
    limit = min(max_workers, DEFAULT_PARTITIONS)  # a worker beyond the partitions idles
    with tempfile.TemporaryDirectory(prefix=f"cvserve-tune-{pipeline.pipeline}-") as tmp:
        images = write_images([size], Path(tmp) / "images", per_size=4)[size]
        with broker_services(specs, Path(tmp), bootstrap, triton_url) as services:
            for note in services.started:
                console.print(f"started {note}")

            def measure(counts: dict[str, int]) -> WorkersTrial:
                return measure_composite(
                    services, pipeline, counts, images, goal, duration_s, Path(tmp), worker_args
                )

            best, trials = search_workers(
                pipeline.stage_names,
                measure,
                limit,
                max_trials,
                on_trial=lambda t: console.print(f"  {describe(t)}"),
            )
    return best, trials, services


def report_workers_tuning(
    pipeline: str,
    goal: Goal,
    best: WorkersTrial,
    trials: Sequence[WorkersTrial],
    services: BrokerServices,
    size: tuple[int, int],
    duration_s: float,
    written_to: str,
    out: Path | None = None,
    console: Console | None = None,
) -> Path:
    """Print the table of trials and write the JSON report; its path."""
    console = console or Console(width=None if sys.stdout.isatty() else 140)
    stages = list(best.workers)
    table = Table(
        title=f"cvserve tune {pipeline}: workers per stage across Kafka, {goal.describe()}, "
        f"{size[0]}x{size[1]}"
    )
    for stage in stages:
        table.add_column(f"{stage} workers", justify="right")
    for column in ("img/s", "crops/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for stage in stages:
        table.add_column(f"{stage} busy", justify="right")
        table.add_column(f"{stage} rec/s/worker", justify="right")
    table.add_column("")
    table.add_column("note")
    for t in trials:
        loads = {s.stage: s for s in t.stages}
        table.add_row(
            *(str(t.workers[s]) for s in stages),
            f"{t.images_per_s:.1f}",
            f"{t.crops_per_s:.1f}",
            f"{t.p50_ms:.0f}",
            f"{t.p99_ms:.0f}",
            *(
                cell
                for s in stages
                for cell in (f"{loads[s].busy:.0%}", f"{loads[s].rate:.1f}")
                if s in loads
            ),
            "chosen" if t.chosen else "",
            t.note,
        )
    console.print(table)
    chosen = stage_settings(best)
    console.print(
        "chosen: "
        + ", ".join(
            f"{stage} {v['workers']} worker(s)"
            + (f" at {v['rate']:g} rec/s each" if "rate" in v else "")
            for stage, v in chosen.items()
        )
        + f" -> {written_to}"
    )
    report = {
        "benchmark": "tune-workers",
        "pipeline": pipeline,
        "stages": stages,
        "goal": dataclasses.asdict(goal),
        "size": f"{size[0]}x{size[1]}",
        "duration_s": duration_s,
        "kafka": kafka_version(),
        "started": list(services.started),
        "chosen": chosen,
        "written_to": written_to,
        "machine": machine_info(),
        "trials": [
            {**dataclasses.asdict(t), "score": t.score if t.feasible else None} for t in trials
        ],
    }
    path = write_report(report, f"tune-{pipeline}", out, console=console)
    return path
