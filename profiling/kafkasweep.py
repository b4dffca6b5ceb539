"""`cvserve profile --kafka`: a pipeline's requests across a real Kafka broker, every hop traced.

Services: a Kafka broker (in a temporary folder unless a bootstrap address is given), a Triton
serving the pipeline's ensembles (`pipelines.catalog.pipeline_specs`; started so that
`TritonTracer` can trace it unless a URL is given) and ``workers_per_stage`` stage worker
processes per broker stage, in a topic namespace of this run. Per point (image size ×
concurrency): warm up with tracing off, snapshot the statistics API, turn tracing on, run the
closed loop (`profiling.kafkaload`), turn tracing off, snapshot again, then join each request
with the Triton traces of its calls and attribute it (`profiling.kafkatrace`).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvserve.broker.routes import Route, route
from cvserve.broker.worker_processes import StageWorkerProcesses
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.triton_grpc import grpc_client
from cvserve.pipelines.spec import PipelineSpec
from cvserve.profiling import tritonstats
from cvserve.profiling.kafkaload import BrokerClient, BrokerLoad, closed_loop_over_broker, warm_up
from cvserve.profiling.kafkatrace import join_request
from cvserve.profiling.sweep import serve_traced, write_images
from cvserve.profiling.sweep_plan import Point, SweepConfig
from cvserve.profiling.sweep_results import PointResult, SweepRun
from cvserve.profiling.trace import WallClock, sample_clocks
from cvserve.profiling.tritontrace import TritonTracer, phase_totals

# A detector on random weights scores every box low: with these, each image fans out to 3 crops.
FAN_OUT = {"score_threshold": 0.0, "max_detections": 3}
TRANSIT, WAIT = "broker_transit", "consumer_wait"  # hop span kinds (`profiling.trace`)


@dataclass(frozen=True)
class BrokerServices:
    """Where the broker and Triton are, whether this run started them, and the run's namespace."""

    bootstrap: str
    triton_url: str
    namespace: str
    started: tuple[str, ...]


@contextlib.contextmanager
def broker_services(
    specs: Sequence[PipelineSpec],
    workdir: Path,
    bootstrap: str | None = None,
    triton_url: str | None = None,
) -> Iterator[BrokerServices]:
    """Kafka and a traceable Triton serving ``specs``: the given ones, else started in
    ``workdir`` (and stopped, by pid, on exit)."""
    started = []
    with contextlib.ExitStack() as stack:
        if not bootstrap:
            broker = stack.enter_context(KafkaBroker(workdir / "kafka"))
            bootstrap = broker.bootstrap
            started.append(f"Kafka {bootstrap}")
        if not triton_url:
            server = stack.enter_context(serve_traced(specs, workdir / "triton"))
            triton_url = server.grpc_url
            started.append(f"Triton {triton_url}")
        namespace = f"profile-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        yield BrokerServices(bootstrap, triton_url, namespace, tuple(started))


def served_placement(specs: Sequence[PipelineSpec]) -> str:
    """Where the ensembles preprocess: ``server-cpu`` or ``server-gpu``."""
    return f"server-{specs[0].stage_by_role('preprocess').device}"


@dataclass
class BrokerPointResult(PointResult):
    """A point measured across the broker: the load's crops and what never completed."""

    load: BrokerLoad | None = None
    clock: WallClock | None = None

    def summary(self) -> dict[str, Any]:
        summary = super().summary()
        assert self.load is not None and self.clock is not None
        n = max(1, len(self.records))

        def kind_ms(kind: str) -> float:
            return sum(r.attribution.by_kind.get(kind, 0) for r in self.records) / n / 1e6

        summary.update(
            {
                "transport": "kafka",
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
) -> BrokerPointResult:
    """Measure one point (see the module docstring)."""
    warm_up(client, images, config.warmup_requests, timeout_s=120)
    models = [stage.name for spec in specs for stage in spec.stages]
    roles = {stage.name: stage.role for spec in specs for stage in spec.stages}
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
    )


def run_broker_sweep(
    pipeline: str,
    specs: Sequence[PipelineSpec],
    config: SweepConfig,
    image_dir: Path,
    bootstrap: str | None = None,
    triton_url: str | None = None,
    workers_per_stage: int = 1,
    worker_args: Sequence[str] = (),
    on_point: Callable[[Point, PointResult | None], None] = lambda p, r: None,
    on_plan: Callable[[int, list[str]], None] = lambda n, skipped: None,
) -> SweepRun:
    """Every size × concurrency of ``config`` for ``pipeline`` (served as ``specs``) over Kafka;
    ``worker_args`` go to every stage worker (a pipeline file's ``--file F``)."""
    images = write_images(config.sizes, image_dir, config.images_per_size)
    placement = served_placement(specs)
    points = [Point(placement, w, h, c) for (w, h) in config.sizes for c in config.concurrency]
    pipeline_route = route(pipeline)
    with (
        tempfile.TemporaryDirectory(prefix="cvserve-profile-kafka-") as tmp,
        broker_services(specs, Path(tmp), bootstrap, triton_url) as services,
    ):
        on_plan(len(points), [f"started {what}" for what in services.started])
        stats_client = grpc_client(services.triton_url)
        workers = StageWorkerProcesses(
            services.bootstrap,
            pipeline,
            services.triton_url,
            services.namespace,
            Path(tmp) / "workers",
            per_stage=workers_per_stage,
            extra_args=tuple(worker_args),
        )
        try:
            tracer = TritonTracer.attach(stats_client)
            with workers, BrokerClient(services.bootstrap, pipeline, services.namespace) as client:
                workers.wait_running()
                run = SweepRun(pipeline, config, server=services.triton_url)
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
                    )
                    run.results.append(result)
                    on_point(point, result)
        finally:
            stats_client.close()
    run.transport = {
        "kind": "kafka",
        "bootstrap": services.bootstrap,
        "namespace": services.namespace,
        "stages": pipeline_route.stage_names,
        "workers_per_stage": workers_per_stage,
        "started": list(services.started),
    }
    worst = max(run.results, key=lambda r: r.clock.skew_bound_ns if r.clock else 0, default=None)
    if worst is not None and worst.clock is not None:
        run.clocks = {"broker_hops": worst.clock.describe()}
    return run
