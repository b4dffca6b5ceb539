"""A batch runner of DALI preprocessing with per-image errors: the graph of `preprocess.dali_graph`
fused in one pipeline, or its steps timed apart (`preprocess.dali_steps`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from cvserve.preprocess.dali_graph import HW_DECODER_LOAD, build_pipeline, gpu_count
from cvserve.preprocess.dali_steps import StepPipelines
from cvserve.preprocess.preprocessor import (
    Encoded,
    Preprocessed,
    Preprocessor,
    Result,
    decoder_error,
)
from cvserve.preprocess.spec import PreprocessSpec
from cvserve.preprocess.tensors import IMAGE


class DaliPreprocessor(Preprocessor):
    """Runs a `PreprocessSpec` through DALI on lists of encoded images.

    ``device`` defaults to ``spec.device``. On ``gpu`` the pixels are ``torch.Tensor`` on CUDA
    (copied into torch's allocator); on the CPU, views of DALI's own output batch. With
    ``step_times`` the graph runs as three chained pipelines (`preprocess.dali_steps`, same
    output) and `timed` says how long each step of `preprocess.preprocessor.STEPS` took.
    ``hw_decoder_load``: the share of JPEGs a GPU with a hardware JPEG decoder (A100/H100/H200)
    sends to it (0: nvJPEG on the SMs only; ignored on the CPU).
    """

    name = "dali"
    filter = "DALI resize INTERP_LINEAR with antialias: the spec's triangle, borders clamped"

    def __init__(
        self,
        spec: PreprocessSpec,
        max_batch_size: int = 32,
        num_threads: int | None = None,
        device: Literal["cpu", "gpu"] | None = None,
        device_id: int = 0,
        step_times: bool = False,
        hw_decoder_load: float = HW_DECODER_LOAD,
    ) -> None:
        super().__init__(spec, max_batch_size)
        self.device = device or spec.device
        self.device_id = device_id
        if self.device == "gpu" and gpu_count() == 0:
            raise RuntimeError("DALI GPU preprocessing needs a CUDA GPU; DALI sees none")
        self.steps: StepPipelines | None = None
        if step_times:
            self.steps = StepPipelines(
                spec, max_batch_size, num_threads, self.device, device_id, hw_decoder_load
            )
        else:
            self.pipeline = build_pipeline(
                spec, max_batch_size, num_threads, self.device, device_id, hw_decoder_load
            )
        last = self.steps.pipelines[-1] if self.steps else self.pipeline
        self.owned = bool(last.exec_dynamic)  # outputs stay valid after the next run

    def timed(self, images: Sequence[bytes | np.ndarray]) -> tuple[list[Result], np.ndarray]:
        """The results of ``images`` and the wall-clock ns spent in each step of `STEPS` on all
        of them, int64 [3] (needs ``step_times``)."""
        if self.steps is None:
            raise RuntimeError("step times need a DaliPreprocessor built with step_times=True")
        self.steps.ns[:] = 0
        results = self(images)
        return results, self.steps.ns.copy()

    def _process(self, chunk: list[Encoded]) -> list[Result]:
        try:
            return self._run(chunk)
        except RuntimeError:
            if len(chunk) == 1:
                return [decoder_error(chunk[0])]
        # The batch failed: bisect to find the image(s) the decoder refuses.
        half = len(chunk) // 2
        return self._process(chunk[:half]) + self._process(chunk[half:])

    def _run(self, chunk: Sequence[Encoded]) -> list[Result]:
        encoded = [np.frombuffer(i.data, np.uint8) for i in chunk]
        if self.steps is not None:
            pixels, meta = self.steps.run(encoded)
        else:
            self.pipeline.feed_input(IMAGE, encoded)
            pixels, meta = self.pipeline.run()
        metas = meta.as_array()
        gpu = self.device == "gpu"
        if not pixels.is_dense_tensor():  # a dynamic spec: each image has its own size
            images = (
                _to_torch(pixels, self.device_id)
                if gpu
                else [np.array(pixels.at(i)) for i in range(len(chunk))]
            )
            return [Preprocessed(images[i], metas[i]) for i in range(len(chunk))]
        # DALI's dynamic executor (the default) leaves a batch's buffers to whoever holds them,
        # so the CPU pixels are taken without a copy; the legacy one reuses them on the next run.
        # GPU pixels are copied into torch's allocator (a device copy, microseconds).
        if gpu:
            batch = _to_torch(pixels, self.device_id)
        else:
            batch = np.asarray(pixels.as_tensor()) if self.owned else pixels.as_array()
        return [Preprocessed(batch[i], metas[i], batch, i) for i in range(len(chunk))]


def _to_torch(pixels: Any, device_id: int) -> Any:
    """A DALI GPU batch → a new torch tensor (N, ...) on ``cuda:<device_id>`` (DALI's device)
    for equal shapes, else a list of one tensor per image (a dynamic spec)."""
    import torch
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    def copy(tensor: Any) -> Any:
        out = torch.empty(
            tensor.shape(), dtype=to_torch_type[tensor.dtype], device=f"cuda:{device_id}"
        )
        feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(out.device))
        return out

    if pixels.is_dense_tensor():
        return copy(pixels.as_tensor())
    return [copy(pixels[i]) for i in range(len(pixels))]
