"""Pipelines derived from a `PipelineSpec` (never declared twice): the same stages, rearranged.

- `tensor_input`: ``<name>_tensor``, the pipeline without its preprocess stage, taking what
  preprocessing would have produced (``PIXELS``, and ``META`` where a later stage reads it):
  what a client that preprocesses itself calls.
- `with_devices`: the same pipeline with preprocessing and inference placed on given devices.
- `with_preprocess_times`: the preprocess stage (or the fused model serving it) also returns
  ``PREPROCESS_TIMES`` (the profiler's decode / resize+crop / normalize split; the adapter must
  support it).
- `with_stage_times`: the ensemble also returns the time its models spent in their own work
  and in the copies between host and device they make: a fused model's ``STAGE_TIMES`` (its
  preprocessing, DNN and postprocessing apart), or each stage's `own_times` when the stages are
  apart (what the profiler splits each model's compute with; the rest of that compute is the
  hand-off between Triton and the stage's stub).
- `unfused`: a pipeline whose stages are served as one model
  (`models.fusion`) with its stages apart again; every view above starts from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from cvserve.pipelines.spec import Device, PipelineSpec, Role, StageSpec, TensorSpec

TENSOR_SUFFIX = "_tensor"
# int64 [3] per image: ns spent decoding, resizing + cropping, normalizing its batch.
PREPROCESS_TIMES = TensorSpec("PREPROCESS_TIMES", "int64", (3,))
# The parts of a fused model, in the order of STAGE_TIMES (`models.fusion`).
FUSED_PARTS: tuple[Role, ...] = ("preprocess", "inference", "postprocess")
# Span kinds of the copies a stage makes itself: its inputs from the host onto its device (a
# client's tensors for a GPU stage), its answers from its device to the host. On a GPU they are
# data movement measured with CUDA events; the encoded bytes' host→device copy happens inside
# DALI's ``mixed`` decoder and stays in the decode.
TO_DEVICE, TO_HOST = "to_device", "to_host"
# What each place of STAGE_TIMES holds: per part of `FUSED_PARTS`, its inputs' copy onto its
# device, its own work (kind: the role), its answers' copy to the host.
TIMED: tuple[tuple[Role, str], ...] = tuple(
    (role, kind) for role in FUSED_PARTS for kind in (TO_DEVICE, role, TO_HOST)
)
# int64 [9] per image: ns its batch spent in each of `TIMED` inside the fused model (0 for what
# it does not do); on a GPU, until that work had finished on the device.
STAGE_TIMES = TensorSpec("STAGE_TIMES", "int64", (len(TIMED),))


def time_slot(role: Role, kind: str) -> int:
    """The place of ``role``'s ``kind`` (`TO_DEVICE`, the role itself: its work, `TO_HOST`) in
    `STAGE_TIMES`."""
    return TIMED.index((role, kind))


def own_times(role: Role) -> TensorSpec:
    """int64 [9] per image, from a stage served apart: the ns its batch spent in its copies and
    its own work, at ``role``'s places in `TIMED` (the others 0), so that the stages' vectors
    added up read like a fused model's `STAGE_TIMES`."""
    return TensorSpec(f"{STAGE_TIMES.name}_{role.upper()}", "int64", STAGE_TIMES.dims)


# Every tensor a model reports its parts' times in: the fused model's, then each role's apart.
STAGE_TIME_TENSORS: tuple[TensorSpec, ...] = (STAGE_TIMES, *map(own_times, FUSED_PARTS))
# Every time tensor the profiler may ask a pipeline for (`with_stage_times`,
# `with_preprocess_times`).
TIME_TENSORS: tuple[TensorSpec, ...] = (*STAGE_TIME_TENSORS, PREPROCESS_TIMES)


def reported_stage_times(outputs: Mapping[str, Sequence[int]]) -> list[int] | None:
    """One image's ns per place of `TIMED`: its row of each of `STAGE_TIME_TENSORS` in
    ``outputs`` (a call's answer), added up; None when it holds none. A row of another length
    (a model built by an earlier cvserve: int64 [3]) is not read."""
    rows = [
        outputs[t.name]
        for t in STAGE_TIME_TENSORS
        if t.name in outputs and len(outputs[t.name]) == len(TIMED)
    ]
    if not rows:
        return None
    return [sum(int(row[place]) for row in rows) for place in range(len(TIMED))]


def is_fused(spec: PipelineSpec) -> bool:
    """Whether one of ``spec``'s models serves several of its stages (`models.fusion`)."""
    return any(s.fused for s in spec.stages)


def unfused(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` with each fused model replaced by the stages it serves together (unchanged when
    none is fused); what only the fused model outputs (`STAGE_TIMES`, its `PREPROCESS_TIMES`)
    goes with it."""
    if not is_fused(spec):
        return spec
    stages = tuple(part for s in spec.stages for part in (s.fused or (s,)))
    produced = {t.name for s in stages for t in s.outputs}
    outputs = tuple(t for t in spec.outputs if t.name in produced)
    return dataclasses.replace(spec, stages=stages, outputs=outputs)


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


def _with_output(spec: PipelineSpec, stage: StageSpec, tensor: TensorSpec) -> PipelineSpec:
    """``spec`` whose ``stage`` also outputs ``tensor``, returned to the client."""
    extended = dataclasses.replace(stage, outputs=(*stage.outputs, tensor))
    stages = tuple(extended if s is stage else s for s in spec.stages)
    return dataclasses.replace(spec, stages=stages, outputs=(*spec.outputs, tensor))


def fused_stage(spec: PipelineSpec) -> StageSpec | None:
    """The model serving ``spec``'s preprocessing fused with its DNN (None: not fused)."""
    return next((s for s in spec.stages if s.fused), None)


def with_preprocess_times(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` whose preprocess stage — or the fused model serving it — also outputs
    `PREPROCESS_TIMES`, returned to the client."""
    fused = fused_stage(spec)
    stage = fused if fused is not None else spec.stage_by_role("preprocess")
    return _with_output(spec, stage, PREPROCESS_TIMES)


def with_stage_times(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` returning what its models spent in their own work: a fused model's `STAGE_TIMES`
    (which it declares always), or each stage's `own_times` where the stages are apart (a stage
    with cvserve's adapter: a model of the user's own served by its Triton backend reports
    none; ``ValueError`` when two stages have one role). Unchanged if it already does."""
    fused = fused_stage(spec)
    if fused is None:
        timed = [s for s in spec.stages if s.adapter and s.role in FUSED_PARTS]
        roles = [s.role for s in timed]
        if len(set(roles)) < len(roles):  # their times would land in one place
            raise ValueError(f"{spec.name} has two stages of one role: {roles}")
        for stage in timed:
            if own_times(stage.role) not in spec.outputs:
                spec = _with_output(spec, spec.stage(stage.name), own_times(stage.role))
        return spec
    if STAGE_TIMES in spec.outputs:
        return spec
    if STAGE_TIMES not in fused.outputs:
        return _with_output(spec, fused, STAGE_TIMES)
    return dataclasses.replace(spec, outputs=(*spec.outputs, STAGE_TIMES))
