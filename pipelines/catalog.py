"""The pipelines cvserve serves, each declared once as a `PipelineSpec`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cvserve.pipelines.spec import BatchingSpec, Device, PipelineSpec, StageSpec, TensorSpec
from cvserve.preprocess.spec import PreprocessSpec

# Tensor names shared by the stages of the image pipelines.
IMAGE = "IMAGE"  # encoded image bytes, one image per batch row (zero-padded to a common length)
PIXELS = "PIXELS"  # preprocessed (3, H, W) tensor
LOGITS = "LOGITS"
LABELS = "LABELS"
SCORES = "SCORES"

ADAPTERS = "cvserve.models.triton"


def default_threads() -> int:
    """Worker threads for one preprocessing instance: every core this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def classify(
    arch: str = "resnet50",
    *,
    device: Device = "cpu",
    max_batch_size: int = 8,
    instances: int = 1,
    top_k: int = 5,
    num_classes: int = 1000,
    weights: str | None = None,
    seed: int = 0,
    preprocess: PreprocessSpec | None = None,
    dali_threads: int | None = None,
    torch_threads: int = 1,
    max_queue_delay_us: int = 2000,
) -> PipelineSpec:
    """Image classification: DALI preprocess → torchvision classifier → top-k."""
    pre = preprocess or PreprocessSpec()
    batching = BatchingSpec(max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us)
    pixels = TensorSpec(PIXELS, pre.dtype, pre.output_shape)
    logits = TensorSpec(LOGITS, "float32", (num_classes,))
    stages = (
        StageSpec(
            name="preprocess",
            role="preprocess",
            adapter=f"{ADAPTERS}.preprocess",
            inputs=(TensorSpec(IMAGE, "uint8", (-1,), allow_ragged_batch=True),),
            outputs=(pixels,),
            params={"spec": pre.to_dict(), "num_threads": dali_threads or default_threads()},
            batching=batching,
            instances=instances,
            device=device,
        ),
        StageSpec(
            name="classifier",
            role="inference",
            adapter=f"{ADAPTERS}.classifier",
            inputs=(pixels,),
            outputs=(logits,),
            params={
                "arch": arch,
                "num_classes": num_classes,
                "seed": seed,
                "weights": weights,
                "torch_threads": torch_threads,
            },
            batching=batching,
            instances=instances,
            device=device,
        ),
        StageSpec(
            name="postprocess",
            role="postprocess",
            adapter=f"{ADAPTERS}.topk",
            inputs=(logits,),
            outputs=(
                TensorSpec(LABELS, "int64", (top_k,)),
                TensorSpec(SCORES, "float32", (top_k,)),
            ),
            params={"top_k": top_k},
            batching=batching,
            instances=1,
            device="cpu",
        ),
    )
    return PipelineSpec(
        name="classify",
        stages=stages,
        inputs=(stages[0].inputs[0],),
        # Intermediate tensors must not also be ensemble outputs: Triton 2.51 then reports
        # 'unexpected deadlock' when a client requests only some outputs.
        outputs=stages[2].outputs,
        description=f"classification: DALI preprocess → {arch} → top-{top_k}",
    )


PIPELINES: dict[str, Callable[..., PipelineSpec]] = {"classify": classify}


def pipeline(name: str, **options: Any) -> PipelineSpec:
    """The spec of pipeline ``name`` with ``options`` (those it does not take are ignored)."""
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; choose from {sorted(PIPELINES)}")
    factory = PIPELINES[name]
    accepted = factory.__code__.co_varnames[
        : factory.__code__.co_argcount + factory.__code__.co_kwonlyargcount
    ]
    return factory(**{k: v for k, v in options.items() if k in accepted and v is not None})
