"""Pipelines derived from a `PipelineSpec` (never declared twice): the same stages, rearranged.

- `tensor_input`: ``<name>_tensor``, the pipeline without its preprocess stage, taking what
  preprocessing would have produced (``PIXELS``, and ``META`` where a later stage reads it):
  what a client that preprocesses itself calls.
- `with_devices`: the same pipeline with preprocessing and inference placed on given devices.
- `with_preprocess_times`: the preprocess stage also returns ``PREPROCESS_TIMES`` (the
  profiler's decode / resize+crop / normalize split; the adapter must support it).
- `unfused`: a pipeline whose stages are served as one model
  (`models.fusion`) with its stages apart again; every view above starts from it.
"""

from __future__ import annotations

import dataclasses

from cvserve.pipelines.spec import Device, PipelineSpec, Role, TensorSpec

TENSOR_SUFFIX = "_tensor"
# int64 [3] per image: ns spent decoding, resizing + cropping, normalizing its batch.
PREPROCESS_TIMES = TensorSpec("PREPROCESS_TIMES", "int64", (3,))


def is_fused(spec: PipelineSpec) -> bool:
    """Whether one of ``spec``'s models serves several of its stages (`models.fusion`)."""
    return any(s.fused for s in spec.stages)


def unfused(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` with each fused model replaced by the stages it serves together (unchanged when
    none is fused)."""
    if not is_fused(spec):
        return spec
    stages = tuple(part for s in spec.stages for part in (s.fused or (s,)))
    return dataclasses.replace(spec, stages=stages)


def tensor_input(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` minus its preprocess stage (and the outputs only it made), as ensemble
    ``<name>_tensor``."""
    spec = unfused(spec)
    pre = spec.stage_by_role("preprocess")
    rest = tuple(s for s in spec.stages if s is not pre)
    consumed = {t.name for s in rest for t in s.inputs}
    produced = {t.name for s in rest for t in s.outputs}
    inputs = tuple(t for t in pre.outputs if t.name in consumed)
    return PipelineSpec(
        name=f"{spec.name}{TENSOR_SUFFIX}",
        stages=rest,
        inputs=inputs,
        outputs=tuple(t for t in spec.outputs if t.name in produced),
        description=f"{spec.description} (preprocessed by the client)",
    )


def with_devices(spec: PipelineSpec, devices: dict[Role, Device]) -> PipelineSpec:
    """``spec`` (its stages apart) with the stages of each role in ``devices`` placed on that
    device."""
    spec = unfused(spec)
    stages = tuple(
        dataclasses.replace(s, device=devices[s.role], params=s.params.on_device(devices[s.role]))
        if s.role in devices
        else s
        for s in spec.stages
    )
    return dataclasses.replace(spec, stages=stages)


def with_preprocess_times(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` (its stages apart) whose preprocess stage also outputs `PREPROCESS_TIMES`,
    returned to the client."""
    spec = unfused(spec)
    pre = spec.stage_by_role("preprocess")
    timed = dataclasses.replace(pre, outputs=(*pre.outputs, PREPROCESS_TIMES))
    stages = tuple(timed if s is pre else s for s in spec.stages)
    return dataclasses.replace(spec, stages=stages, outputs=(*spec.outputs, PREPROCESS_TIMES))
