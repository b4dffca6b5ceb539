"""`fuse_stages`: a pipeline whose preprocessing, DNN and postprocessing are served as one model.

In the ensemble each stage is its own python-backend stub: the preprocessed batch and the DNN's
outputs cross Triton between stubs (shared memory, or GPU memory handles, one scheduling step
each). Fused, one stub decodes, infers and postprocesses, on the CPU or on one GPU (DALI
``mixed`` → the DNN → postprocessing, the tensors never leaving the device): each instance runs
DALI, then the engine, then the postprocess function on its batch, and instances overlap each
other instead of the stages overlapping. The ensemble stays, one step, so clients call the same
name with the same tensors. The fused model also declares ``STAGE_TIMES`` (its parts' times,
for the profiler), computed only for a request that asks for it.
Whether fusing is faster is measured (`cvserve tune`'s ``fuse_stages`` axis), never assumed: it
trades the hops for the stages' separate batching, threads and instances.
"""

from __future__ import annotations

import dataclasses

from cvserve.models.params import DnnParams, FusedParams, PostprocessParams
from cvserve.pipelines.spec import PipelineSpec, StageSpec
from cvserve.pipelines.variants import STAGE_TIMES
from cvserve.preprocess.spec import PreprocessParams

FUSED_ADAPTER = "cvserve.models.triton.fused"
FUSED_SUFFIX = "_fused"


def fused_model_name(pipeline: str) -> str:
    """The Triton model serving pipeline ``pipeline``'s stages fused."""
    return f"{pipeline}{FUSED_SUFFIX}"


class NotFusable(ValueError):
    """A pipeline whose stages cannot run in one python-backend model."""


def fused_settings(cores: int) -> dict[str, object]:
    """The serving settings a fused pipeline starts from: one instance per core, each running
    its preprocessing and its DNN on one thread (the instances overlap, not the stages).
    Measured (2 cores, classify mobilenet_v3_small, onnxruntime, 640×480): 313–326 img/s
    served against 245–253 for the best ensemble (DALI 2 + engine 1 threads, one instance)."""
    return {"fuse_stages": True, "instances": cores, "dali_threads": 1, "torch_threads": 1}


def fusable(spec: PipelineSpec) -> str | None:
    """Why ``spec`` cannot be fused (None: it can)."""
    try:
        pre, dnn = spec.stage_by_role("preprocess"), spec.stage_by_role("inference")
    except KeyError as exc:
        return str(exc.args[0])
    if not isinstance(pre.params, PreprocessParams) or not isinstance(dnn.params, DnnParams):
        return "its DNN is the user's own Triton model (cvserve runs no adapter for it)"
    if spec.stages.index(dnn) != spec.stages.index(pre) + 1:
        return "a stage runs between its preprocessing and its DNN"
    if pre.params.spec.dynamic:
        return "its images keep their own sizes (resize_mode dynamic): no fixed batch to fuse"
    if pre.device != dnn.device:
        return f"its preprocessing runs on the {pre.device}, its DNN on the {dnn.device}"
    return None


def _postprocess_after(spec: PipelineSpec, dnn: StageSpec) -> StageSpec | None:
    """The postprocess stage right after ``dnn`` that can join it (a postprocess function; it
    runs on the DNN's device)."""
    after = spec.stages[spec.stages.index(dnn) + 1 :]
    if after and after[0].role == "postprocess" and isinstance(after[0].params, PostprocessParams):
        return after[0]
    return None


def fuse_stages(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` with its preprocess, DNN and (when right after) postprocess stages replaced by
    one model ``<pipeline>_fused``: input the preprocess stage's, outputs the last fused
    stage's (without a postprocess, also the META a later stage or the pipeline reads); the
    DNN stage's batching and instances, each instance with the stages' threads. `NotFusable`
    says why when it cannot be."""
    reason = fusable(spec)
    if reason:
        raise NotFusable(f"pipeline {spec.name} cannot be fused: {reason}")
    pre, dnn = spec.stage_by_role("preprocess"), spec.stage_by_role("inference")
    post = _postprocess_after(spec, dnn)
    parts = (pre, dnn, post) if post else (pre, dnn)
    rest = [s for s in spec.stages if s not in parts]
    if post:
        outputs = post.outputs
    else:
        read = {t.name for s in rest for t in s.inputs} | {t.name for t in spec.outputs}
        outputs = (*dnn.outputs, *(t for t in pre.outputs if t.name in read))
    # Timed only when a request asks for it: the ensemble never does (nothing reads it there)
    # unless profiling serves `pipelines.variants.with_stage_times`, or calls this model itself.
    outputs = (*outputs, STAGE_TIMES)
    params = FusedParams(
        pre.params_as(PreprocessParams),
        dnn.params_as(DnnParams),
        tuple(t.name for t in dnn.outputs),
        post.params_as(PostprocessParams) if post else None,
        tuple(t.name for t in post.inputs) if post else (),
    )
    fused = StageSpec(
        name=fused_model_name(spec.name),
        role="inference",
        adapter=FUSED_ADAPTER,
        inputs=pre.inputs,
        outputs=outputs,
        params=params,
        batching=dnn.batching,
        instances=dnn.instances,
        device=dnn.device,
        fused=parts,
    )
    at = spec.stages.index(pre)
    stages = (*spec.stages[:at], fused, *spec.stages[at + len(parts) :])
    return dataclasses.replace(spec, stages=stages)
