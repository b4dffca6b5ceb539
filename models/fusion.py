"""`fuse_preprocess`: a pipeline whose preprocessing and DNN are served as one model.

In the ensemble each stage is its own python-backend stub, and the preprocessed batch crosses
Triton twice (preprocess stub → tritonserver → DNN stub, through shared memory). Fused, one stub
decodes and infers: each instance runs DALI then the engine on its batch, and instances overlap
each other instead of the stages overlapping. Whether that is faster is measured
(`cvserve tune`'s ``fuse_preprocess`` axis), never assumed: it trades the hop for the stages'
separate batching and threads. Measured here (classify mobilenet_v3_small, onnxruntime, 640×480,
2 cores): fused, one instance per core with one thread per stage, served 284–300 img/s against
249–258 for the best ensemble (DALI 2 + engine 1 threads); for resnet50 on OpenVINO bf16 the
ensemble stayed ahead (116–118 against 110 fused).
"""

from __future__ import annotations

import dataclasses

from cvserve.models.params import DnnParams, FusedParams
from cvserve.pipelines.spec import PipelineSpec, StageSpec
from cvserve.preprocess.spec import PreprocessParams

FUSED_ADAPTER = "cvserve.models.triton.fused"
FUSED_SUFFIX = "_fused"


class NotFusable(ValueError):
    """A pipeline whose preprocessing and DNN cannot run in one python-backend model."""


def fused_settings(cores: int) -> dict[str, object]:
    """The serving settings a fused pipeline starts from: one instance per core, each running
    its preprocessing and its DNN on one thread (the instances overlap, not the stages)."""
    return {"fuse_preprocess": True, "instances": cores, "dali_threads": 1, "torch_threads": 1}


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
    if "gpu" in (pre.device, dnn.device):
        return "a stage is on the GPU (Triton's DALI and TensorRT backends serve it there)"
    return None


def fuse_preprocess(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` with its preprocess and DNN stages replaced by one model
    ``<dnn stage>_fused``: input the preprocess stage's, outputs the DNN's then those of the
    preprocess stage a later stage or the pipeline reads (META); the DNN stage's batching and
    instances, each instance with both stages' threads. `NotFusable` says why when it cannot."""
    reason = fusable(spec)
    if reason:
        raise NotFusable(f"pipeline {spec.name} cannot be fused: {reason}")
    pre, dnn = spec.stage_by_role("preprocess"), spec.stage_by_role("inference")
    rest = [s for s in spec.stages if s not in (pre, dnn)]
    read = {t.name for s in rest for t in s.inputs} | {t.name for t in spec.outputs}
    passed = tuple(t for t in pre.outputs if t.name in read)
    fused = StageSpec(
        name=f"{dnn.name}{FUSED_SUFFIX}",
        role="inference",
        adapter=FUSED_ADAPTER,
        inputs=pre.inputs,
        outputs=(*dnn.outputs, *passed),
        params=FusedParams(pre.params, dnn.params),
        batching=dnn.batching,
        instances=dnn.instances,
        device=dnn.device,
        fused=(pre, dnn),
    )
    at = spec.stages.index(pre)
    stages = (*spec.stages[:at], fused, *spec.stages[at + 2 :])
    return dataclasses.replace(spec, stages=stages)
