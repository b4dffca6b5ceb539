"""Run a profiling sweep (`profiling.sweep_plan`'s points), every request traced; results in
`profiling.sweep_results`.

Each point: warm up, snapshot the statistics API, turn Triton tracing on, run a closed loop for
the duration, turn tracing off (Triton writes the traces), snapshot again, join each client trace
with its Triton trace by request id and attribute it. One Triton at a time.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cvserve.deploy.host import cuda_available
from cvserve.deploy.triton import TritonServer
from cvserve.deploy.triton_grpc import grpc_client
from cvserve.models.serving import serve_locally
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling import tritonstats
from cvserve.profiling.attribution import (
    attribute,
)
from cvserve.profiling.load import closed_loop
from cvserve.profiling.sweep_plan import (
    Point,
    SweepConfig,
    Target,
    external_targets,
    plan_servers,
    points_of,
)
from cvserve.profiling.sweep_results import PointResult, RequestRecord, SweepRun
from cvserve.profiling.trace import Trace
from cvserve.profiling.tracedclient import CALL_END, CALL_START, TracedSender
from cvserve.profiling.tritontrace import (
    ModelTrace,
    TritonTracer,
    attach_triton,
    phase_totals,
    server_args,
)


@contextlib.contextmanager
def serve_traced(
    specs: Sequence[PipelineSpec], workdir: Path, timeout_s: float = 180.0
) -> Iterator[TritonServer]:
    """A local Triton serving ``specs``, started so `TritonTracer` can trace it."""
    trace_dir = workdir / "traces"
    trace_dir.mkdir(parents=True, exist_ok=True)
    trace = server_args(trace_dir / "triton-trace.json")
    with serve_locally(list(specs), workdir, timeout_s, extra_args=trace) as server:
        yield server


def write_images(sizes: Sequence[tuple[int, int]], folder: Path, per_size: int) -> dict:
    """``per_size`` generated JPEGs per size under ``folder``: {(w, h): [paths]}."""
    folder.mkdir(parents=True, exist_ok=True)
    images: dict[tuple[int, int], list[Path]] = {}
    for width, height in sizes:
        paths = []
        for seed in range(per_size):
            path = folder / f"{width}x{height}-{seed}.jpg"
            if not path.exists():
                path.write_bytes(synthetic_image(width, height, seed))
            paths.append(path)
        images[(width, height)] = paths
    return images


def join_and_attribute(
    traces: Sequence[Trace], found: dict[str, ModelTrace], roles: dict[str, str]
) -> list[RequestRecord]:
    """Attach each trace's Triton spans (by request id) and attribute it."""
    records = []
    for trace in traces:
        request = found.get(trace.request_id)
        skew = attach_triton(
            trace,
            request,
            roles,
            trace.marks[CALL_START],
            trace.marks[CALL_END],
            preprocess_ns=trace.attributes.get("preprocess_ns"),  # type: ignore[arg-type]
            stage_ns=trace.attributes.get("stage_ns"),  # type: ignore[arg-type]
        )
        records.append(RequestRecord(trace, attribute(trace), request is not None, skew))
    return records


def run_point(
    url: str,
    tracer: TritonTracer,
    target: Target,
    point: Point,
    images: Sequence[Path],
    duration_s: float,
    warmup_requests: int = 3,
    tag: str = "p",
) -> PointResult:
    """Measure one point on the server at ``url`` (see the module docstring)."""
    warm = TracedSender(url, target.ensemble, images, target.preprocessor, record=False)
    try:
        for i in range(warmup_requests):
            warm(i)
    finally:
        warm.close()
    senders: list[TracedSender] = []

    def make_sender() -> TracedSender:
        sender = TracedSender(
            url, target.ensemble, images, target.preprocessor, tag=f"{tag}c{len(senders)}"
        )
        senders.append(sender)
        return sender

    models = [s.name for s in target.ensemble.stages]
    stats_client = grpc_client(url)
    try:
        before = tritonstats.fetch_settled(stats_client, models)
        start_ns = time.monotonic_ns()
        with tracer.tracing():
            load = closed_loop(make_sender, point.concurrency, duration_s=duration_s)
        traces = [t for s in senders for t in s.traces]
        found = tracer.collect([t.request_id for t in traces])
        after = tritonstats.fetch_settled(stats_client, models)
    finally:
        stats_client.close()
    return PointResult(
        point=point,
        records=join_and_attribute(traces, found, target.roles),
        wall_s=load.wall_s,
        errors=load.errors,
        ensemble=target.ensemble.name,
        stats={m: after[m] - before[m] for m in models},
        trace_totals=phase_totals(found.values()),
        start_ns=start_ns,
    )


def run_targets(
    url: str,
    tracer: TritonTracer,
    work: Sequence[tuple[Target, Point]],
    images: dict,
    config: SweepConfig,
    on_point: Callable[[Point, PointResult | None], None],
    first_index: int = 0,
) -> list[PointResult]:
    results = []
    for index, (target, point) in enumerate(work, start=first_index):
        on_point(point, None)
        result = run_point(
            url,
            tracer,
            target,
            point,
            images[(point.width, point.height)],
            config.duration_s,
            config.warmup_requests,
            tag=f"p{index}",
        )
        results.append(result)
        on_point(point, result)
    return results


def run_sweep(
    base: PipelineSpec,
    config: SweepConfig,
    image_dir: Path,
    triton_url: str | None = None,
    on_point: Callable[[Point, PointResult | None], None] = lambda p, r: None,
    on_plan: Callable[[int, list[str]], None] = lambda n, skipped: None,
) -> SweepRun:
    """Run every point of ``config`` for pipeline ``base``; ``on_plan(points, skipped)`` is
    called once the points are known, ``on_point`` before (result None) and after each."""
    images = write_images(config.sizes, image_dir, config.images_per_size)
    run = SweepRun(base.name, config, server=triton_url or "embedded")
    if triton_url:
        targets, run.skipped = external_targets(
            triton_url, base, config.placements, config.split_preprocess
        )
        work = points_of(targets, config)
        on_plan(len(work), run.skipped)
        client = grpc_client(triton_url)
        try:
            tracer = TritonTracer.attach(client)
            run.results = run_targets(triton_url, tracer, work, images, config, on_point)
        finally:
            client.close()
        return run
    plans, run.skipped = plan_servers(
        base, config.placements, cuda_available(), config.split_preprocess
    )
    plan_work = [points_of(plan.targets, config) for plan in plans]
    on_plan(sum(map(len, plan_work)), run.skipped)
    for plan, work in zip(plans, plan_work, strict=True):
        with (
            tempfile.TemporaryDirectory(prefix="cvserve-profile-") as tmp,
            serve_traced(plan.specs, Path(tmp)) as server,
        ):
            tracer = TritonTracer.attach(server.grpc_client())
            run.results += run_targets(
                server.grpc_url, tracer, work, images, config, on_point, len(run.results)
            )
    return run
