"""`cvserve profile --kafka`: a pipeline's requests across a real Kafka broker (or Redis Streams,
``--broker redis``), every hop traced.

Services: the broker (in a temporary folder unless an address is given), a Triton
serving the pipeline's ensembles (`pipelines.catalog.pipeline_specs`; started so that
`TritonTracer` can trace it unless a URL is given) and ``workers_per_stage`` stage worker
processes per broker stage, in a topic namespace of this run. Per point (image size ×
concurrency): warm up with tracing off, snapshot the statistics API, turn tracing on, run the
closed loop (`profiling.kafkaload`), turn tracing off, snapshot again, then join each request
with the Triton traces of its calls and attribute it (`profiling.kafkatrace`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvserve.broker.routes import Route, as_route
from cvserve.deploy.triton_grpc import grpc_client
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import (
    TIME_TENSORS,
    is_fused,
    unfused,
)
from cvserve.profiling import tritonstats
from cvserve.profiling.categories import model_roles
from cvserve.profiling.kafkaload import BrokerClient, BrokerLoad, closed_loop_over_broker, warm_up
from cvserve.profiling.kafkatrace import join_request
from cvserve.profiling.sweep import write_images
from cvserve.profiling.sweep_plan import Point, SweepConfig, as_served, stale_times
from cvserve.profiling.sweep_results import PointResult, SweepRun
from cvserve.profiling.trace import WallClock, sample_clocks
from cvserve.profiling.tritontrace import TritonTracer, phase_totals

# A detector on random weights scores every box low: with these, each image fans out to 3 crops.
FAN_OUT = {"score_threshold": 0.0, "max_detections": 3}
TRANSIT, WAIT = "broker_transit", "consumer_wait"  # hop span kinds (`profiling.trace`)


def as_profiled(spec: PipelineSpec, split_preprocess: bool = False) -> PipelineSpec:
    """``spec`` as the profiler serves it across a broker: as it runs (`sweep_plan.as_served`),
    its ensemble also returning its models' own times (`with_stage_times`), and with
    ``split_preprocess`` `PREPROCESS_TIMES` (each stage worker's result then carries them, and
    `kafkatrace.join_request` splits the compute that reported them)."""
    return as_served(unfused(spec), is_fused(spec), split_preprocess, notes=[])


def unreported(client: Any, specs: Sequence[PipelineSpec]) -> list[str]:
    """A line for each of ``specs`` (`as_profiled`) whose ensemble on the server at ``client``
    does not return the time tensors asked of it, or returns them in another layout (a
    repository built by an earlier cvserve), naming them (a running server's ensembles: that
    compute stays whole)."""
    notes = []
    for spec in specs:
        wanted = [t for t in spec.outputs if t in TIME_TENSORS]
        if not wanted:
            continue
        outputs = client.get_model_metadata(spec.name, as_json=True)["outputs"]
        served = {o["name"]: o.get("shape", []) for o in outputs}
        missing = [t.name for t in wanted if t.name not in served]
        if missing:
            notes.append(
                f"{spec.name} as served returns no {', '.join(missing)}: that compute is not "
                "split (let the profiler serve the pipeline to split it)"
            )
        notes.extend(stale_times(spec, served))
    return notes


def served_placement(specs: Sequence[PipelineSpec]) -> str:
    """Where the ensembles preprocess: ``server-cpu`` or ``server-gpu``."""
    return f"server-{unfused(specs[0]).stage_by_role('preprocess').device}"


@dataclass
class BrokerPointResult(PointResult):
    """A point measured across the broker: the load's crops and what never completed."""

    load: BrokerLoad | None = None
    clock: WallClock | None = None
    transport: str = "kafka"

    def summary(self) -> dict[str, Any]:
        summary = super().summary()
        assert self.load is not None and self.clock is not None
        n = max(1, len(self.records))

        def kind_ms(kind: str) -> float:
            return sum(r.attribution.by_kind.get(kind, 0) for r in self.records) / n / 1e6

        summary.update(
            {
                "transport": self.transport,
                "crops_per_s": round(self.load.crops_per_s, 2),
                "crops_mean": float(np.mean([r.trace.attributes["crops"] for r in self.records]))
                if self.records
                else 0.0,
                "incomplete": self.load.incomplete,
                "broker_transit_ms": kind_ms(TRANSIT),
                "consumer_wait_ms": kind_ms(WAIT),
                "hop_clock": self.clock.describe(),
            }
        )
        return summary


def run_broker_point(
    client: BrokerClient,
    tracer: TritonTracer,
    stats_client: Any,
    pipeline_route: Route,
    specs: Sequence[PipelineSpec],
    point: Point,
    images: Sequence[Path],
    config: SweepConfig,
    transport: str = "kafka",
) -> BrokerPointResult:
    """Measure one point (see the module docstring)."""
    warm_up(client, images, config.warmup_requests, timeout_s=120)
    models = [stage.name for spec in specs for stage in spec.stages]
    roles = model_roles(specs)
    before = tritonstats.fetch_settled(stats_client, models)
    first = sample_clocks()
    start_ns = time.monotonic_ns()
    with tracer.tracing():
        load = closed_loop_over_broker(client, images, point.concurrency, config.duration_s)
    clock = WallClock(first, sample_clocks())
    found = tracer.collect([m.call_id for r in load.requests for m in r.results])
    after = tritonstats.fetch_settled(stats_client, models)
    return BrokerPointResult(
        point=point,
        records=[join_request(r, pipeline_route, clock, found, roles) for r in load.requests],
        wall_s=load.wall_s,
        errors=load.errors,
        ensemble="+".join(stage.ensemble for stage in pipeline_route.stages),
        stats={m: after[m] - before[m] for m in models},
        trace_totals=phase_totals(found.values()),
        start_ns=start_ns,
        load=load,
        clock=clock,
        transport=transport,
    )


def run_broker_sweep(
    pipeline: Route | str,
    specs: Sequence[PipelineSpec],
    config: SweepConfig,
    image_dir: Path,
    bootstrap: str | None = None,
    triton_url: str | None = None,
    workers_per_stage: int | None = None,
    worker_args: Sequence[str] = (),
    on_point: Callable[[Point, PointResult | None], None] = lambda p, r: None,
    on_plan: Callable[[int, list[str]], None] = lambda n, skipped: None,
    broker: str = "kafka",
) -> SweepRun:
    """Every size × concurrency of ``config`` for ``pipeline`` (its route, or the name of a
    pipeline served as one ensemble; served as ``specs``) across
    ``broker`` (`profiling.transports.TRANSPORTS`: ``kafka``, or ``redis`` with ``bootstrap`` a
    Redis URL); ``worker_args`` go to every stage worker (a pipeline file's ``--file F``);
    ``workers_per_stage`` None: each stage's own count (`StageWorkerProcesses`)."""
    from cvserve.profiling.transports import TRANSPORTS

    transport = TRANSPORTS[broker]
    images = write_images(config.sizes, image_dir, config.images_per_size)
    placement = served_placement(specs)
    points = [Point(placement, w, h, c) for (w, h) in config.sizes for c in config.concurrency]
    pipeline_route = as_route(pipeline)
    with (
        tempfile.TemporaryDirectory(prefix="cvserve-profile-kafka-") as tmp,
        transport.services(specs, Path(tmp), bootstrap, triton_url) as services,
    ):
        stats_client = grpc_client(services.triton_url)
        notes = [f"started {what}" for what in services.started]
        on_plan(len(points), notes + unreported(stats_client, specs))
        workers = transport.workers(
            services.bootstrap,
            pipeline_route,
            services.triton_url,
            services.namespace,
            Path(tmp) / "workers",
            per_stage=workers_per_stage,
            extra_args=tuple(worker_args),
        )
        try:
            tracer = TritonTracer.attach(stats_client)
            client_of = transport.client(services.bootstrap, pipeline_route, services.namespace)
            with workers, client_of as client:
                workers.wait_running()
                run = SweepRun(pipeline_route.pipeline, config, server=services.triton_url)
                for point in points:
                    on_point(point, None)
                    result = run_broker_point(
                        client,
                        tracer,
                        stats_client,
                        pipeline_route,
                        specs,
                        point,
                        images[(point.width, point.height)],
                        config,
                        broker,
                    )
                    run.results.append(result)
                    on_point(point, result)
        finally:
            stats_client.close()
    run.transport = {
        "kind": broker,
        "bootstrap": services.bootstrap,
        "namespace": services.namespace,
        "stages": pipeline_route.stage_names,
        "workers_per_stage": {s.name: workers.count(s) for s in pipeline_route.stages},
        "started": list(services.started),
    }
    worst = max(run.results, key=lambda r: r.clock.skew_bound_ns if r.clock else 0, default=None)
    if worst is not None and worst.clock is not None:
        run.clocks = {"broker_hops": worst.clock.describe()}
    return run
