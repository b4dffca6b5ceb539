"""The stages of an image pipeline (preprocess → DNN → postprocess), for `pipelines.from_file`,
which builds every spec from a pipeline file.

What differs per task around a `models.architectures` network is declared in `TASKS` (tensors,
postprocess function), per architecture in `models.architectures` (input size, resize mode,
normalisation), read without importing torch. Batching, instances and threads come from
`serving_plan`; the serving machine's cores are an argument (`catalog.resolve` passes its
`Host`'s): nothing here reads the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cvserve.models.architectures import architecture
from cvserve.models.params import DnnParams
from cvserve.pipelines.defaults import serving_defaults
from cvserve.pipelines.spec import (
    BatchingSpec,
    Device,
    StageSpec,
    TensorSpec,
)
from cvserve.preprocess.spec import PreprocessParams, PreprocessSpec
from cvserve.preprocess.tensors import (
    BOXES,
    COUNT,
    DEPTH,
    EMBEDDING,
    IMAGE,
    LABELS,
    LOGITS,
    MASK,
    META,
    META_LENGTH,
    PIXELS,
    RAW,
    SCORES,
    SIZE,
)

ADAPTERS = "cvserve.models.triton"
CROP_RATIO = 256 / 224  # classification: resize shorter side to crop × this, then centre-crop


@dataclass(frozen=True)
class Task:
    """What one task's pipeline looks like around its DNN."""

    default_arch: str
    dnn_outputs: Callable[[int, tuple[int, int]], tuple[TensorSpec, ...]]  # (classes, (H, W))
    postprocess: str  # models.postprocess_functions.FUNCTIONS key
    uses_meta: bool
    results: Callable[[dict[str, Any]], tuple[TensorSpec, ...]]  # from postprocess options


TASKS: dict[str, Task] = {
    "classify": Task(
        "resnet50",
        lambda c, hw: (TensorSpec(LOGITS, "float32", (c,)),),
        "top_k",
        False,
        lambda o: (
            TensorSpec(LABELS, "int64", (o["k"],)),
            TensorSpec(SCORES, "float32", (o["k"],)),
        ),
    ),
    "segment": Task(
        "deeplabv3_mobilenet_v3_large",
        lambda c, hw: (TensorSpec(f"{RAW}LOGITS", "float32", (c, *hw)),),
        "segmentation_masks",
        True,
        lambda o: (TensorSpec(MASK, "uint8", (-1, -1)), TensorSpec(SIZE, "int32", (2,))),
    ),
    "detect": Task(
        "ssdlite320_mobilenet_v3_large",
        lambda c, hw: (
            TensorSpec(f"{RAW}BOXES", "float32", (-1, 4)),
            TensorSpec(f"{RAW}SCORES", "float32", (-1,)),
            TensorSpec(f"{RAW}LABELS", "int64", (-1,)),
            TensorSpec(f"{RAW}COUNT", "int32", (1,)),
        ),
        "detections",
        True,
        lambda o: (
            TensorSpec(BOXES, "float32", (o["max_detections"], 4)),
            TensorSpec(SCORES, "float32", (o["max_detections"],)),
            TensorSpec(LABELS, "int64", (o["max_detections"],)),
            TensorSpec(COUNT, "int32", (1,)),
        ),
    ),
    "depth": Task(
        "depth_resnet18",
        lambda c, hw: (TensorSpec(f"{RAW}DEPTH", "float32", (1, *hw)),),
        "depth_maps",
        True,
        lambda o: (TensorSpec(DEPTH, "float16", (-1, -1)), TensorSpec(SIZE, "int32", (2,))),
    ),
    "identify": Task(
        "embed_resnet18",
        lambda c, hw: (TensorSpec(f"{RAW}EMBEDDING", "float32", (c,)),),
        "l2_normalize",
        False,
        lambda o: (TensorSpec(EMBEDDING, "float32", (-1,)),),
    ),
}


def preprocess_spec_for(arch: str) -> PreprocessSpec:
    """The preprocessing an architecture expects, from its declaration in `models.architectures`."""
    a = architecture(arch)
    return PreprocessSpec(
        resize_mode=a.resize_mode,
        resize_shorter=round(min(a.input_size) * CROP_RATIO),
        crop=a.input_size,
        mean=a.mean,
        std=a.std,
    )


def preprocess_outputs(
    pre: PreprocessSpec, pixels_name: str = PIXELS
) -> tuple[TensorSpec, TensorSpec]:
    """The pixels (named ``pixels_name``: a model file's own input name; the spec's shape and
    dtype) and ``META``, as a preprocess stage outputs them."""
    return TensorSpec(pixels_name, pre.dtype, pre.output_shape), TensorSpec(
        META, "float32", (META_LENGTH,)
    )


def preprocess_stage(
    name: str,
    params: PreprocessParams,
    batching: BatchingSpec,
    instances: int = 1,
    pixels_name: str = PIXELS,
) -> StageSpec:
    """The preprocessing stage of an image pipeline: encoded ``IMAGE`` in, the pixels
    (``pixels_name``) and META out, on the spec's device."""
    return StageSpec(
        name=name,
        role="preprocess",
        adapter=f"{ADAPTERS}.preprocess",
        inputs=(TensorSpec(IMAGE, "uint8", (-1,), allow_ragged_batch=True),),
        outputs=preprocess_outputs(params.spec, pixels_name),
        params=params,
        batching=batching,
        instances=instances,
        device=params.spec.device,
    )


@dataclass(frozen=True)
class ServingPlan:
    """How a pipeline's stages are served: batching, instances and threads per instance."""

    batching: BatchingSpec
    instances: int
    torch_threads: int
    dali_threads: int


def serving_plan(
    device: Device,
    max_batch_size: int | None = None,
    instances: int | None = None,
    torch_threads: int | None = None,
    dali_threads: int | None = None,
    max_queue_delay_us: int | None = None,
    preferred_batch_sizes: tuple[int, ...] | None = None,
    *,
    cores: int | None,
) -> ServingPlan:
    """The given settings, the others from `serving_defaults` for ``device`` on a machine of
    ``cores`` cores (None: unknown, the NGC target's)."""
    defaults = serving_defaults(device, cores)
    max_batch_size = max_batch_size or defaults.max_batch_size
    if max_queue_delay_us is None:
        max_queue_delay_us = defaults.max_queue_delay_us
    if preferred_batch_sizes is None:
        preferred_batch_sizes = defaults.preferred_batch_sizes
    batching = BatchingSpec(
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
        preferred_batch_sizes=tuple(b for b in preferred_batch_sizes if b <= max_batch_size),
    )
    return ServingPlan(
        batching,
        instances or defaults.instances,
        torch_threads or defaults.torch_threads,
        dali_threads or defaults.dali_threads,
    )


def dnn_stage(
    name: str,
    params: DnnParams,
    pixels: TensorSpec,
    outputs: tuple[TensorSpec, ...],
    batching: BatchingSpec,
    instances: int,
    device: Device,
) -> StageSpec:
    """The DNN stage: the python-backend adapter running ``params``'s network on ``pixels``."""
    return StageSpec(
        name=name,
        role="inference",
        adapter=f"{ADAPTERS}.dnn",
        inputs=(pixels,),
        outputs=outputs,
        params=params,
        batching=batching,
        instances=instances,
        device=device,
    )
