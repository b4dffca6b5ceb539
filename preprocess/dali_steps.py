"""The DALI graph as three chained pipelines, so that each step can be timed: `STEPS`.

A fused pipeline runs its operators interleaved on its thread pool and cannot be timed per step.
Here each step is a pipeline of its own, running exactly the operators of the fused graph
(`preprocess.dali`: `decode_step`; `resize_step`; `normalize_step`) with the same arguments, so
the output is bit-identical to the fused one. Every pipeline reads the encoded bytes too and
evaluates the same `placement_of` (header only, cheap) for its arguments; META comes out of the
first. Built only when step times are asked for (the profiler's ``PREPROCESS_TIMES``).

Intermediate batches pass on without a copy (``no_copy``): a batch stays in its pipeline's
buffers until that pipeline runs again, which happens only after the next step has consumed it.
Times are wall clock (``perf_counter_ns``) around each step's feed + run (on the GPU, until its
work has finished), summed over the chunks of one call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import Pipeline

from cvserve.deploy.host import usable_cores
from cvserve.preprocess.dali_graph import (
    HW_DECODER_LOAD,
    decode_step,
    meta_node,
    normalize_step,
    placement_of,
    resize_step,
)
from cvserve.preprocess.preprocessor import STEPS
from cvserve.preprocess.spec import PreprocessSpec
from cvserve.preprocess.tensors import IMAGE

# External inputs of the second and third pipelines: the previous step's output.
DECODED, RESIZED = "DECODED", "RESIZED"


def define_step_pipelines(
    spec: PreprocessSpec,
    max_batch_size: int,
    num_threads: int | None = None,
    device: Literal["cpu", "gpu"] = "cpu",
    device_id: int | None = 0,
    hw_decoder_load: float = HW_DECODER_LOAD,
) -> tuple[Pipeline, Pipeline, Pipeline]:
    """Unbuilt pipelines, one per step of `STEPS`: ``IMAGE`` → ``(decoded, meta)``;
    ``IMAGE, DECODED`` → ``resized``; ``IMAGE, RESIZED`` → ``pixels``."""
    config = {
        "batch_size": max_batch_size,
        "num_threads": num_threads or usable_cores(),
        "device_id": device_id if device == "gpu" else None,
        "prefetch_queue_depth": 1,
    }
    later = "gpu" if device == "gpu" else "cpu"  # where decoded and resized images live

    def encoded() -> DataNode:
        return fn.external_source(name=IMAGE, dtype=types.UINT8, ndim=1)

    def previous(name: str) -> DataNode:
        return fn.external_source(
            name=name, device=later, dtype=types.UINT8, ndim=3, layout="HWC", no_copy=True
        )

    @pipeline_def(**config)
    def decode() -> tuple[DataNode, DataNode]:
        data = encoded()
        decoded = decode_step(data, device, hw_decoder_load, spec.channels)
        return decoded, meta_node(placement_of(data, spec))

    @pipeline_def(**config)
    def resize_crop() -> DataNode:
        return resize_step(previous(DECODED), placement_of(encoded(), spec), spec)

    @pipeline_def(**config)
    def normalize() -> DataNode:
        return normalize_step(previous(RESIZED), placement_of(encoded(), spec), spec)

    return decode(), resize_crop(), normalize()


class StepPipelines:
    """The three pipelines, built; `run` a batch and add each step's ns to `ns`."""

    def __init__(
        self,
        spec: PreprocessSpec,
        max_batch_size: int,
        num_threads: int | None = None,
        device: Literal["cpu", "gpu"] = "cpu",
        device_id: int | None = 0,
        hw_decoder_load: float = HW_DECODER_LOAD,
    ) -> None:
        self.device = device
        self.pipelines = define_step_pipelines(
            spec, max_batch_size, num_threads, device, device_id, hw_decoder_load
        )
        for pipe in self.pipelines:
            pipe.build()
        # What each pipeline reads: DALI prunes an input nothing uses (the normalize step reads
        # no placement when the resize already cropped), and refuses data fed to it.
        self.reads = [
            {n for n in (IMAGE, DECODED, RESIZED) if _has_input(pipe, n)} for pipe in self.pipelines
        ]
        self.ns = np.zeros(len(STEPS), np.int64)  # per step of `STEPS`, since last reset

    def run(self, encoded: Sequence[np.ndarray]) -> tuple[Any, Any]:
        """``(pixels, meta)`` DALI batches of ``encoded`` (as the fused pipeline's); raises
        ``RuntimeError`` if a step fails (its time still counts)."""
        decode, resize_crop, normalize = self.pipelines
        decoded, meta = self._step(0, decode, {IMAGE: encoded})
        (resized,) = self._step(1, resize_crop, {IMAGE: encoded, DECODED: decoded})
        (pixels,) = self._step(2, normalize, {IMAGE: encoded, RESIZED: resized})
        return pixels, meta

    def _step(self, index: int, pipe: Pipeline, inputs: dict[str, Any]) -> tuple[Any, ...]:
        start = time.perf_counter_ns()
        try:
            for name, data in inputs.items():
                if name in self.reads[index]:
                    pipe.feed_input(name, data)
            outputs = pipe.run()
            if self.device == "gpu":
                _synchronize()
            return outputs
        finally:
            self.ns[index] += time.perf_counter_ns() - start


def _has_input(pipe: Pipeline, name: str) -> bool:
    try:
        pipe.input_feed_count(name)
    except KeyError:
        return False
    return True


def _synchronize() -> None:
    """Wait for the GPU work issued so far (a step's time ends when its kernels have run)."""
    import torch

    torch.cuda.synchronize()
