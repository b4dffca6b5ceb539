"""Run a profiling sweep: placements × image sizes × concurrency, every request traced.

Each point: warm up, snapshot the statistics API, turn Triton tracing on, run a closed loop for
the duration, turn tracing off (Triton writes the traces), snapshot again, join each client trace
with its Triton trace by request id and attribute it. Placements that share no model names run on
one server; the others on a fresh one after it (one Triton at a time).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

from cvserve.deploy.host import cuda_available
from cvserve.deploy.triton import TritonServer
from cvserve.models.serving import serve_locally
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import tensor_input, with_devices, with_preprocess_times
from cvserve.preprocess.naive import NaivePreprocessor
from cvserve.preprocess.spec import PreprocessParams
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling import tritonstats
from cvserve.profiling.attribution import (
    Attribution,
    attribute,
    category_stats,
    span_means_ms,
    unattributed_share,
)
from cvserve.profiling.load import closed_loop
from cvserve.profiling.trace import Trace
from cvserve.profiling.tracedclient import CALL_END, CALL_START, TracedSender
from cvserve.profiling.tritontrace import (
    ModelTrace,
    TritonTracer,
    attach_triton,
    phase_totals,
    server_args,
)

CLIENT_CPU, SERVER_CPU, SERVER_GPU = "client-cpu", "server-cpu", "server-gpu"
PLACEMENTS: tuple[str, ...] = (CLIENT_CPU, SERVER_CPU, SERVER_GPU)
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080), (3840, 2160))
DEFAULT_CONCURRENCY: tuple[int, ...] = (1, 4, 16)


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` → (640, 480)."""
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


@dataclass(frozen=True)
class Point:
    """One measurement: where preprocessing runs, the image size, clients in flight."""

    placement: str
    width: int
    height: int
    concurrency: int

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def label(self) -> str:
        return f"{self.placement} {self.size} x{self.concurrency}"


@dataclass(frozen=True)
class RequestRecord:
    """One request of a point: its trace, attribution, and how its Triton trace fitted."""

    trace: Trace
    attribution: Attribution
    triton_traced: bool
    skew_ns: int


@dataclass
class PointResult:
    """Everything measured at one point."""

    point: Point
    records: list[RequestRecord]
    wall_s: float
    errors: int
    ensemble: str
    stats: dict[str, tritonstats.ModelStats]
    trace_totals: dict[str, dict[str, int]]
    start_ns: int

    @property
    def images_per_s(self) -> float:
        return len(self.records) / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict[str, Any]:
        attributions = [r.attribution for r in self.records]
        byte_counts = [int(r.trace.attributes.get("request_bytes", 0)) for r in self.records]
        return {
            "placement": self.point.placement,
            "size": self.point.size,
            "width": self.point.width,
            "height": self.point.height,
            "concurrency": self.point.concurrency,
            "ensemble": self.ensemble,
            "requests": len(self.records),
            "errors": self.errors,
            "wall_s": round(self.wall_s, 3),
            "images_per_s": round(self.images_per_s, 2),
            "categories": category_stats(attributions),
            "spans_ms": span_means_ms(attributions),
            "unattributed_share": unattributed_share(attributions),
            "triton_traced": sum(r.triton_traced for r in self.records),
            "max_skew_ns": max((r.skew_ns for r in self.records), default=0),
            "request_bytes_mean": sum(byte_counts) / len(byte_counts) if byte_counts else 0,
            "triton_vs_stats": triton_vs_stats(self.trace_totals, self.stats),
        }


def triton_vs_stats(
    traced: dict[str, dict[str, int]], stats: dict[str, tritonstats.ModelStats]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and phase: ms summed over the traced requests beside the statistics API's."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, delta in stats.items():
        if model not in traced:
            continue
        out[model] = {
            phase: {"trace_ms": traced[model][phase] / 1e6, "stats_ms": delta.ns[phase] / 1e6}
            for phase in tritonstats.PHASES
        }
        out[model]["requests"] = {
            "trace": float(traced[model]["requests"]),
            "stats": float(delta.requests),
        }
    return out


@dataclass(frozen=True)
class Target:
    """What a placement's requests call: the ensemble and, for client-cpu, the preprocessing."""

    placement: str
    ensemble: PipelineSpec
    preprocessor: NaivePreprocessor | None
    roles: dict[str, str]

    @classmethod
    def of(cls, placement: str, ensemble: PipelineSpec, base: PipelineSpec) -> Target:
        pre = None
        if placement == CLIENT_CPU:
            params = base.stage_by_role("preprocess").params_as(PreprocessParams)
            pre = NaivePreprocessor(params.spec)
        return cls(placement, ensemble, pre, {s.name: s.role for s in ensemble.stages})


@dataclass(frozen=True)
class ServerPlan:
    """Pipelines served together on one Triton and the target of each placement on it."""

    specs: tuple[PipelineSpec, ...]
    targets: tuple[Target, ...]


def plan_servers(
    base: PipelineSpec, placements: Sequence[str], gpu: bool, split_preprocess: bool = False
) -> tuple[list[ServerPlan], list[str]]:
    """The servers a sweep needs, and a message per placement skipped.

    The DNN runs on the GPU when there is one, whatever the placement, so that placements
    differ only in where preprocessing runs. Variants come from `pipelines.variants`.
    """
    unknown = set(placements) - set(PLACEMENTS)
    if unknown:
        raise ValueError(f"unknown placement(s) {sorted(unknown)}; choose from {PLACEMENTS}")
    skipped = []
    dnn = "gpu" if gpu else "cpu"
    cpu = with_devices(base, {"preprocess": "cpu", "inference": dnn})
    served = with_preprocess_times(cpu) if split_preprocess else cpu
    plans = []
    cpu_targets = []
    if CLIENT_CPU in placements:
        cpu_targets.append(Target.of(CLIENT_CPU, tensor_input(cpu), base))
    if SERVER_CPU in placements:
        cpu_targets.append(Target.of(SERVER_CPU, served, base))
    if cpu_targets:
        plans.append(ServerPlan(tuple(t.ensemble for t in cpu_targets), tuple(cpu_targets)))
    if SERVER_GPU in placements:
        if gpu:
            spec = with_devices(base, {"preprocess": "gpu", "inference": "gpu"})
            spec = with_preprocess_times(spec) if split_preprocess else spec
            plans.append(ServerPlan((spec,), (Target.of(SERVER_GPU, spec, base),)))
        else:
            skipped.append("server-gpu skipped: no CUDA GPU on this machine")
    return plans, skipped


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
    stats_client = grpcclient.InferenceServerClient(url)
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


@dataclass
class SweepConfig:
    """What to sweep."""

    placements: tuple[str, ...] = (CLIENT_CPU, SERVER_CPU, SERVER_GPU)
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    duration_s: float = 10.0
    images_per_size: int = 4
    warmup_requests: int = 3
    split_preprocess: bool = False


@dataclass
class SweepRun:
    """A sweep's results and what they were measured on."""

    pipeline: str
    config: SweepConfig
    results: list[PointResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    server: str = "embedded"
    # How requests travelled when not straight to Triton (e.g. Kafka: bootstrap, namespace).
    transport: dict[str, Any] = field(default_factory=dict)
    clocks: dict[str, Any] = field(default_factory=dict)  # added to the summary's clock notes


def points_of(targets: Sequence[Target], config: SweepConfig) -> list[tuple[Target, Point]]:
    return [
        (t, Point(t.placement, w, h, c))
        for (w, h) in config.sizes
        for t in targets
        for c in config.concurrency
    ]


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
        client = grpcclient.InferenceServerClient(triton_url)
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


def external_targets(
    url: str, base: PipelineSpec, placements: Sequence[str], split_preprocess: bool = False
) -> tuple[list[Target], list[str]]:
    """Targets on a running server: ``<task>`` for the server placement it actually serves
    (its preprocess model's instance kind tells CPU from GPU), ``<task>_tensor`` for
    client-cpu if served. With ``split_preprocess`` the server's ensemble must return
    ``PREPROCESS_TIMES``."""
    client = grpcclient.InferenceServerClient(url)
    targets, skipped = [], []
    try:
        pre = base.stage_by_role("preprocess").name
        kind = None
        if client.is_model_ready(pre):
            config = client.get_model_config(pre, as_json=True)["config"]
            groups = config.get("instance_group", [{}])
            kind = "server-gpu" if groups[0].get("kind") == "KIND_GPU" else "server-cpu"
        for placement in placements:
            if placement == CLIENT_CPU:
                tensor = tensor_input(base)
                if client.is_model_ready(tensor.name):
                    targets.append(Target.of(placement, tensor, base))
                else:
                    skipped.append(f"client-cpu skipped: {url} does not serve {tensor.name}")
            elif placement == kind:
                served = with_preprocess_times(base) if split_preprocess else base
                targets.append(Target.of(placement, served, base))
            else:
                skipped.append(
                    f"{placement} skipped: {url} serves {base.name} as "
                    f"{kind or 'nothing (preprocess model not ready)'}"
                )
    finally:
        client.close()
    return targets, skipped
