"""`cvserve bench soak`: a multi-DNN pipeline at a fixed rate through Kafka and Triton for
minutes, watching every process's memory and the backlog.

Services: a Kafka broker and a Triton serving the pipeline (started here unless given), one
stage worker process per broker stage. The load is open loop: one image every ``1 / rate``
seconds, whatever the pipeline does (a closed loop would hide a backlog). Every ``sample_s`` it
records the resident memory (VmRSS, MB) of each process — the broker's JVM, ``tritonserver``,
each python-backend stub (named by its model), each worker and this client — and the consumer
lag of every stage (committed offsets vs the end of each partition, `broker.lag`).

After ``minutes`` it stops sending and waits up to ``drain_s`` for every request's results
(a detection and one result per crop). Reported per process: RSS after warm-up, at the end, the
peak, and the slope of a least-squares line through the samples after ``warmup_fraction`` of the
run (MB/min: a leak shows as a steady slope; allocator noise does not); the lag's maximum and its
final value; submitted, completed (every result read) and lost (not completed after the drain).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from cvserve.broker.lag import LagProbe
from cvserve.broker.producer import MessageTooLarge
from cvserve.broker.routes import named_route
from cvserve.broker.worker_processes import StageWorkerProcesses
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.process import pid_alive, process_tree
from cvserve.pipelines.catalog import COMPOSITES, pipeline_specs
from cvserve.preprocess.spec import PreprocessError
from cvserve.profiling.broker_services import run_namespace
from cvserve.profiling.kafkaload import BrokerClient, warm_up
from cvserve.profiling.kafkasweep import FAN_OUT
from cvserve.profiling.machine import machine_info, write_report
from cvserve.profiling.process_cpu import part_name
from cvserve.profiling.sweep import serve_traced, write_images
from cvserve.profiling.tables import field as cell
from cvserve.profiling.tables import results_table

# Target of the issue: a process whose memory grows faster than this after warm-up leaks.
SLOPE_BOUND_MB_PER_MIN = 1.0


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope_mb_per_min(times_s: list[float], values_mb: list[float]) -> float:
    """The slope of the least-squares line through (t, MB), in MB per minute (0 for < 2)."""
    if len(times_s) < 2:
        return 0.0
    return float(np.polyfit(np.array(times_s) / 60.0, np.array(values_mb), 1)[0])


def watched_processes(roots: Mapping[str, int]) -> dict[str, int]:
    """Each root (name → pid) and, under a ``triton`` root, every stub by its model."""
    named: dict[str, int] = {}
    for name, pid in roots.items():
        if name != "triton":
            named[name] = pid
            continue
        for child in process_tree(pid):
            named[part_name(child) if child != pid else "tritonserver"] = child
    return named


@dataclass
class SoakSamples:
    """What was seen each sample: seconds since start, MB per process, total lag."""

    times_s: list[float] = field(default_factory=list)
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lag: list[tuple[float, int]] = field(default_factory=list)

    def take(self, t_s: float, processes: Mapping[str, int], lag: int | None) -> None:
        self.times_s.append(t_s)
        for name, pid in processes.items():
            mb = rss_mb(pid)
            if mb is not None:
                self.rss.setdefault(name, []).append((t_s, mb))
        if lag is not None:
            self.lag.append((t_s, lag))

    def process_rows(self, warm_from_s: float) -> list[dict[str, Any]]:
        rows = []
        for name, points in sorted(self.rss.items()):
            warm = [(t, mb) for t, mb in points if t >= warm_from_s] or points
            rows.append(
                {
                    "process": name,
                    "rss_warm_mb": round(warm[0][1], 1),
                    "rss_end_mb": round(points[-1][1], 1),
                    "rss_peak_mb": round(max(mb for _, mb in points), 1),
                    "slope_mb_per_min": round(
                        slope_mb_per_min([t for t, _ in warm], [mb for _, mb in warm]), 3
                    ),
                    "samples": len(points),
                }
            )
        return rows


@contextlib.contextmanager
def _services(
    specs: list[Any], workdir: Path, bootstrap: str | None, triton_url: str | None
) -> Iterator[tuple[str, str, dict[str, int]]]:
    """(bootstrap, Triton gRPC URL, pids to watch) — started here unless given."""
    pids: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        if not bootstrap:
            broker = stack.enter_context(KafkaBroker(workdir / "kafka"))
            bootstrap = broker.bootstrap
            pids["kafka"] = broker.process.pid  # type: ignore[union-attr]
        if not triton_url:
            server = stack.enter_context(serve_traced(specs, workdir / "triton"))
            triton_url = server.grpc_url
            pids["triton"] = server.process.pid  # type: ignore[union-attr]
        yield bootstrap, triton_url, pids


def soak(
    pipeline: str = "detect_identify",
    minutes: float = 10.0,
    rate: float = 3.0,
    size: tuple[int, int] = (640, 480),
    bootstrap: str | None = None,
    triton_url: str | None = None,
    watch: Mapping[str, int] | None = None,
    sample_s: float = 1.0,
    warmup_fraction: float = 0.2,
    drain_s: float = 180.0,
    out: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the soak (module docstring); ``watch``: more processes to sample (name → pid, e.g. a
    given broker's or Triton's: ``triton`` is sampled with its stubs). Prints a table, writes JSON
    (``out`` or ``runs/bench-soak-<time>.json``) and returns the report."""
    console = console or Console()
    specs = pipeline_specs(pipeline, **FAN_OUT)
    duration_s = minutes * 60.0
    with (
        tempfile.TemporaryDirectory(prefix="cvserve-soak-") as tmp,
        _services(specs, Path(tmp), bootstrap, triton_url) as (address, url, started),
    ):
        images = write_images([size], Path(tmp) / "images", per_size=4)[size]
        namespace = run_namespace()
        pipeline_route = named_route(pipeline, COMPOSITES)
        folder = Path(tmp) / "workers"
        workers = StageWorkerProcesses(address, pipeline_route, url, namespace, folder)
        with workers, BrokerClient(address, pipeline_route, namespace) as client:
            workers.wait_running()
            warm_up(client, images, requests=2, timeout_s=180)
            roots = {**started, **(watch or {}), "client": os.getpid()}
            per_stage: dict[str, int] = {}
            for worker in workers.workers:
                n = per_stage[worker.stage] = per_stage.get(worker.stage, -1) + 1
                roots[f"worker:{worker.stage}-{n}"] = worker.managed.pid
            processes = watched_processes(roots)
            console.print(
                f"soak: {pipeline} at {rate:g} img/s for {minutes:g} min; watching "
                + ", ".join(sorted(processes))
            )
            samples = SoakSamples()
            probe = LagProbe(address, pipeline_route, namespace)
            try:
                submitted, completed, errors = _run(
                    client, images, rate, duration_s, sample_s, drain_s, samples, processes,
                    probe.total,
                )  # fmt: skip
            finally:
                probe.close()
            for worker in workers.workers:
                if not pid_alive(worker.managed.pid):
                    console.print(f"[red]worker {worker.stage} died:[/red]\n{worker.log()[-2000:]}")
    warm_from_s = duration_s * warmup_fraction
    rows = samples.process_rows(warm_from_s)
    lags = [lag for _, lag in samples.lag]
    report: dict[str, Any] = {
        "benchmark": "soak",
        "pipeline": pipeline,
        "stages": pipeline_route.stage_names,
        "size": "{}x{}".format(*size),
        "rate_images_per_s": rate,
        "minutes": minutes,
        "warmup_s": warm_from_s,
        "sample_s": sample_s,
        "machine": machine_info(),
        "submitted": submitted,
        "completed": completed,
        "lost": submitted - completed,
        "submit_errors": errors,
        "lag_max": max(lags, default=0),
        "lag_final": lags[-1] if lags else None,
        "slope_bound_mb_per_min": SLOPE_BOUND_MB_PER_MIN,
        "processes": rows,
        "lag_samples": samples.lag,
        # Every 10th sample of each process: (seconds, MB), to tell steps from a steady climb.
        "rss_samples": {name: points[::10] for name, points in samples.rss.items()},
    }
    console.print(soak_table(report))
    console.print(
        f"submitted {submitted}, completed {completed}, lost {submitted - completed}; "
        f"lag max {report['lag_max']}, final {report['lag_final']}"
    )
    write_report(report, "bench-soak", out, console=console)
    return report


def _run(
    client: BrokerClient,
    images: list[Path],
    rate: float,
    duration_s: float,
    sample_s: float,
    drain_s: float,
    samples: SoakSamples,
    processes: Mapping[str, int],
    total_lag: Any,
) -> tuple[int, int, int]:
    """The open loop and the sampling; returns (submitted, completed, submit errors)."""
    start = time.monotonic()
    next_send, next_sample = start, start
    submitted = completed = errors = 0
    drain_until = None
    while True:
        now = time.monotonic()
        if now - start < duration_s:
            while next_send <= now:  # on schedule, whatever the pipeline does
                try:
                    client.submit(images[submitted % len(images)])
                except (MessageTooLarge, PreprocessError, OSError):
                    errors += 1
                submitted += 1
                next_send += 1.0 / rate
        elif drain_until is None:
            drain_until = now + drain_s
        if now >= next_sample:
            samples.take(now - start, processes, _lag_or_none(total_lag))
            next_sample += sample_s
        completed += len(client.poll(0.05))
        if drain_until is not None and (not client.pending or now >= drain_until):
            samples.take(time.monotonic() - start, processes, _lag_or_none(total_lag))
            return submitted, completed, errors


def _lag_or_none(total_lag: Any) -> int | None:
    try:
        return int(total_lag())
    except Exception:  # a sample missed (a coordinator moving) is not a failed soak
        return None


def soak_table(report: Mapping[str, Any]) -> Any:
    machine = report["machine"]
    return results_table(
        f"soak: {report['pipeline']} at {report['rate_images_per_s']:g} img/s for "
        f"{report['minutes']:g} min — {machine['cores']} cores, {machine['cpu']}",
        {
            "process": lambda row: row["process"],
            "RSS after warm-up MB": cell("rss_warm_mb", ".1f"),
            "RSS end MB": cell("rss_end_mb", ".1f"),
            "peak MB": cell("rss_peak_mb", ".1f"),
            "slope MB/min": cell("slope_mb_per_min", "+.3f"),
        },
        report["processes"],
        caption=f"slope after {report['warmup_s']:.0f} s of warm-up; bound "
        f"{report['slope_bound_mb_per_min']:g} MB/min per process",
    )
