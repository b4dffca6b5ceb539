"""`cvserve bench <composite>`: a multi-DNN pipeline's end-to-end throughput across Kafka (or,
with ``broker="redis"``, Redis Streams) with 1 vs 2 (or more) stage workers per stage.

One broker and one Triton (started unless given) for the whole bench; each worker count runs in
a topic namespace of its own (fresh topics and consumer groups), warms up, then keeps
``concurrency`` images in flight for ``duration_s`` (`profiling.kafkaload`, Triton tracing off).
Images/s and crops/s count completed requests (detection result and every crop's result read
back) from the first submit to the last completion; latency is submit → last result read.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from cvserve.broker.routes import Route, named_route
from cvserve.deploy.kafka import kafka_version
from cvserve.pipelines.catalog import COMPOSITES, pipeline_specs
from cvserve.profiling.broker_services import BrokerServices
from cvserve.profiling.kafkaload import closed_loop_over_broker, warm_up
from cvserve.profiling.kafkasweep import FAN_OUT
from cvserve.profiling.machine import machine_info, write_report
from cvserve.profiling.process_cpu import cpu_by_role, machine_reading
from cvserve.profiling.sweep import write_images
from cvserve.profiling.tables import field, results_table
from cvserve.profiling.transports import TRANSPORTS


def measure_workers(
    services: BrokerServices,
    pipeline: Route,
    per_stage: int,
    images: Sequence[Path],
    concurrency: int,
    duration_s: float,
    folder: Path,
    broker: str = "kafka",
) -> dict[str, Any]:
    """One row: ``per_stage`` workers per stage, a closed loop of ``concurrency`` images, across
    ``broker`` (``kafka`` or ``redis``: ``services.bootstrap`` is then the Redis URL)."""
    namespace = f"{services.namespace}-w{per_stage}"
    transport = TRANSPORTS[broker]
    workers = transport.workers(
        services.bootstrap,
        pipeline,
        services.triton_url,
        namespace,
        folder / f"workers-{per_stage}",
        per_stage=per_stage,
    )
    with workers, transport.client(services.bootstrap, pipeline, namespace) as client:
        workers.wait_running()
        warm_up(client, images, requests=2 * per_stage, timeout_s=120)
        before = machine_reading()
        load = closed_loop_over_broker(client, images, concurrency, duration_s)
        after = machine_reading()
        role = process_role({w.managed.pid for w in workers.workers})
    cpu_s = cpu_by_role(before, after, role)
    done = max(1, len(load.requests))
    latencies_ms = np.array([(r.completed_ns - r.trace.start_ns) / 1e6 for r in load.requests])
    return {
        "workers_per_stage": per_stage,
        "concurrency": concurrency,
        "images": len(load.requests),
        "crops": sum(r.crops for r in load.requests),
        "incomplete": load.incomplete,
        "errors": load.errors,
        "wall_s": round(load.wall_s, 3),
        "images_per_s": round(load.images_per_s, 2),
        "crops_per_s": round(load.crops_per_s, 2),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 1) if len(latencies_ms) else None,
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 1) if len(latencies_ms) else None,
        # Where the machine's CPU went per completed image, by process (`process_role`), and how
        # many cores were busy in all: a broker's cost end to end is mostly its CPU here.
        "cpu_ms_per_image": {r: round(1e3 * s / done, 1) for r, s in sorted(cpu_s.items())},
        "cores_busy": round(sum(cpu_s.values()) / load.wall_s, 2) if load.wall_s else None,
    }


def cpu_field(role: str) -> Callable[[dict[str, Any]], str]:
    """The table cell of ``role``'s CPU ms per image."""
    return lambda row: format(row["cpu_ms_per_image"].get(role, 0.0), ".1f")


def process_role(worker_pids: set[int]) -> Callable[[int, str], str]:
    """What a process on this machine is, for the CPU split: ``workers`` (the stage workers of
    the run), ``client`` (this process: the load generator), ``kafka`` (a JVM: the brokers),
    ``redis``, ``triton`` (the server and its python-backend stubs), else ``other``."""
    me = os.getpid()

    def role(pid: int, name: str) -> str:
        if pid in worker_pids:
            return "workers"
        if pid == me:
            return "client"
        if name == "java":
            return "kafka"
        if name.startswith("redis-server"):  # it retitles itself "redis-server host:port"
            return "redis"
        if name == "tritonserver" or name.startswith("stub:"):
            return "triton"
        return "other"

    return role


def bench_broker_pipeline(
    pipeline: str,
    workers: Sequence[int] = (1, 2),
    size: tuple[int, int] = (640, 480),
    concurrency: int = 8,
    duration_s: float = 15.0,
    arch: str | None = None,
    bootstrap: str | None = None,
    triton_url: str | None = None,
    out: Path | None = None,
    console: Console | None = None,
    write: bool = True,
    broker: str = "kafka",
) -> dict[str, Any]:
    """Measure each worker count across ``broker`` (``kafka``; ``redis``: ``bootstrap`` is a Redis
    URL, a local server is started without one); print a table and, with ``write``, write JSON
    (``out`` or ``runs/bench-<pipeline>-<time>.json``)."""
    console = console or Console()
    specs = pipeline_specs(pipeline, arch=arch, **FAN_OUT)
    pipeline_route = named_route(pipeline, COMPOSITES)
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"cvserve-bench-{pipeline}-") as tmp:
        images = write_images([size], Path(tmp) / "images", per_size=4)[size]
        with TRANSPORTS[broker].services(specs, Path(tmp), bootstrap, triton_url) as services:
            for note in services.started:
                console.print(f"started {note}")
            for per_stage in workers:
                row = measure_workers(
                    services,
                    pipeline_route,
                    per_stage,
                    images,
                    concurrency,
                    duration_s,
                    Path(tmp),
                    broker,
                )
                console.print(
                    f"  {per_stage} worker(s)/stage: {row['images_per_s']} img/s, "
                    f"{row['crops_per_s']} crops/s, p50 {row['p50_ms']} ms"
                )
                rows.append(row)
    report = {
        "benchmark": f"{pipeline}-over-{broker}",
        "pipeline": pipeline,
        "stages": pipeline_route.stage_names,
        "served": {spec.name: spec.description for spec in specs},
        "fan_out": FAN_OUT,
        "size": "{}x{}".format(*size),
        "duration_s": duration_s,
        "broker": broker,
        **({"kafka": kafka_version()} if broker == "kafka" else {}),
        "bootstrap": services.bootstrap,
        "triton": services.triton_url,
        "machine": machine_info(),
        "results": rows,
    }
    machine = report["machine"]
    table = results_table(
        f"{pipeline} across {TRANSPORTS[broker].label}, {report['size']} JPEGs, "
        f"concurrency {concurrency} — "
        f"{machine['cores']} cores, {machine['cpu']}, GPU {machine['gpu'] or 'none'}",
        {
            "workers/stage": field("workers_per_stage"),
            "images": field("images"),
            "crops": field("crops"),
            "img/s": field("images_per_s", ".1f"),
            "crops/s": field("crops_per_s", ".1f"),
            "p50 ms": field("p50_ms"),
            "p99 ms": field("p99_ms"),
            **{
                f"CPU ms/img {role}": cpu_field(role)
                for role in (broker, "triton", "workers", "client")
            },
            "cores busy": field("cores_busy"),
        },
        rows,
    )
    console.print(table)
    if write:
        write_report(report, f"bench-{pipeline}", out, console=console)
    return report
