"""What a profiling sweep measures: placements × image sizes × concurrency as points, the
servers they need (`plan_servers`) or the targets a running server offers (`external_targets`).

Placements that share no model names run on one server; the others on a fresh one after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cvserve.deploy.triton_grpc import grpc_client
from cvserve.models.fusion import NotFusable, fuse_stages, fused_model_name
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import (
    TIME_TENSORS,
    fused_stage,
    is_fused,
    tensor_input,
    unfused,
    with_devices,
    with_preprocess_times,
    with_stage_times,
)
from cvserve.preprocess.naive import NaivePreprocessor
from cvserve.preprocess.spec import PreprocessParams
from cvserve.profiling.categories import model_roles

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
        return cls(placement, ensemble, pre, model_roles([ensemble]))


@dataclass(frozen=True)
class ServerPlan:
    """Pipelines served together on one Triton and the target of each placement on it."""

    specs: tuple[PipelineSpec, ...]
    targets: tuple[Target, ...]


def as_served(
    spec: PipelineSpec, fused: bool, split_preprocess: bool, notes: list[str]
) -> PipelineSpec:
    """``spec`` (stages apart, devices placed) as it is served and profiled: fused again when
    the pipeline is served fused (`models.fusion`), or apart when its placement cannot be fused
    (said in ``notes``); its models' own times returned (`with_stage_times`: a fused model's
    parts, each stage's work apart), and with ``split_preprocess`` `PREPROCESS_TIMES`."""
    if fused:
        try:
            spec = fuse_stages(spec)
        except NotFusable as exc:
            notes.append(f"{exc}: profiled with its stages apart")
    spec = with_stage_times(spec)
    return with_preprocess_times(spec) if split_preprocess else spec


def plan_servers(
    base: PipelineSpec, placements: Sequence[str], gpu: bool, split_preprocess: bool = False
) -> tuple[list[ServerPlan], list[str]]:
    """The servers a sweep needs, and a message per placement skipped (or served otherwise).

    The DNN runs on the GPU when there is one, whatever the placement, so that placements
    differ only in where preprocessing runs. Variants come from `pipelines.variants`; a
    pipeline served fused is profiled fused, as it runs: its model reports its parts
    (`STAGE_TIMES`), stages apart each report their own work, and the profiler splits each
    model's compute with them.
    """
    fused, base = is_fused(base), unfused(base)
    unknown = set(placements) - set(PLACEMENTS)
    if unknown:
        raise ValueError(f"unknown placement(s) {sorted(unknown)}; choose from {PLACEMENTS}")
    skipped: list[str] = []
    dnn = "gpu" if gpu else "cpu"
    cpu = with_devices(base, {"preprocess": "cpu", "inference": dnn})
    plans = []
    cpu_targets = []
    if CLIENT_CPU in placements:
        cpu_targets.append(Target.of(CLIENT_CPU, tensor_input(with_stage_times(cpu)), base))
    if SERVER_CPU in placements:
        served = as_served(cpu, fused, split_preprocess, skipped)
        cpu_targets.append(Target.of(SERVER_CPU, served, base))
    if cpu_targets:
        plans.append(ServerPlan(tuple(t.ensemble for t in cpu_targets), tuple(cpu_targets)))
    if SERVER_GPU in placements:
        if gpu:
            spec = with_devices(base, {"preprocess": "gpu", "inference": "gpu"})
            spec = as_served(spec, fused, split_preprocess, skipped)
            plans.append(ServerPlan((spec,), (Target.of(SERVER_GPU, spec, base),)))
        else:
            skipped.append("server-gpu skipped: no CUDA GPU on this machine")
    return plans, skipped


def points_of(targets: Sequence[Target], config: SweepConfig) -> list[tuple[Target, Point]]:
    return [
        (t, Point(t.placement, w, h, c))
        for (w, h) in config.sizes
        for t in targets
        for c in config.concurrency
    ]


def external_targets(
    url: str, base: PipelineSpec, placements: Sequence[str], split_preprocess: bool = False
) -> tuple[list[Target], list[str]]:
    """Targets on a running server: ``<task>`` for the server placement it actually serves
    (its preprocess model's instance kind tells CPU from GPU), ``<task>_tensor`` for
    client-cpu if served. With ``split_preprocess`` the server's ensemble must return
    ``PREPROCESS_TIMES``. A pipeline served fused is called at its fused model, asking it for
    its parts' `STAGE_TIMES` (the ensemble does not return them)."""
    base = unfused(base)
    client = grpc_client(url)
    targets, skipped = [], []
    try:
        kind, served = None, base
        for model in (base.stage_by_role("preprocess").name, fused_model_name(base.name)):
            if client.is_model_ready(model):
                config = client.get_model_config(model, as_json=True)["config"]
                groups = config.get("instance_group", [{}])
                kind = SERVER_GPU if groups[0].get("kind") == "KIND_GPU" else SERVER_CPU
                if model != base.stage_by_role("preprocess").name:
                    served = _fused_alone(base, kind, skipped)
                    declared = {o["name"]: o.get("dims", []) for o in config.get("output", [])}
                    skipped.extend(stale_times(served, declared))
                break
        if split_preprocess and served is base:
            served = with_preprocess_times(base)
        elif split_preprocess:
            skipped.append(f"{served.name} runs DALI unsplit: no PREPROCESS_TIMES from it")
        served_as = kind or "nothing (preprocess model not ready)"
        for placement in placements:
            if placement == CLIENT_CPU:
                tensor = tensor_input(base)
                if client.is_model_ready(tensor.name):
                    targets.append(Target.of(placement, tensor, base))
                else:
                    skipped.append(f"client-cpu skipped: {url} does not serve {tensor.name}")
            elif placement == kind:
                targets.append(Target.of(placement, served, base))
            else:
                skipped.append(f"{placement} skipped: {url} serves {base.name} as {served_as}")
    finally:
        client.close()
    return targets, skipped


def stale_times(spec: PipelineSpec, served: Mapping[str, Sequence[Any]]) -> list[str]:
    """A line when the time tensors ``spec`` asks for are served (``served``: tensor name → its
    dims, as Triton's config or metadata gives them) in another layout than this cvserve reads
    (a repository built by an earlier one): the profiler leaves that compute whole."""
    stale = [
        t.name
        for t in spec.outputs
        if t in TIME_TENSORS
        and t.name in served
        and [int(d) for d in served[t.name][-1:]] != [t.dims[-1]]
    ]
    if not stale:
        return []
    return [
        f"{spec.name} returns {', '.join(stale)} in another layout than this cvserve reads: "
        "that compute is not split (rebuild its repository with cvserve repo build)"
    ]


def _fused_alone(base: PipelineSpec, placement: str, notes: list[str]) -> PipelineSpec:
    """What a client calls to profile ``base`` served fused at ``placement``: its fused model
    alone (every output, `STAGE_TIMES` among them), or the ensemble when stages follow the
    fused model (said in ``notes``)."""
    device = "gpu" if placement == SERVER_GPU else "cpu"
    spec = fuse_stages(with_devices(base, {"preprocess": device, "inference": device}))
    fused = fused_stage(spec)
    assert fused is not None
    if len(spec.stages) > 1:
        notes.append(f"{spec.name}: stages follow {fused.name}; its parts are not split")
        return spec
    return PipelineSpec(fused.name, (fused,), fused.inputs, fused.outputs, spec.description)
