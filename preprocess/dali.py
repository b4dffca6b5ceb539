"""DALI preprocessing graphs built from a `PreprocessSpec`; a batch runner with per-image errors.

The graph reads top to bottom as the data flows: encoded bytes → decode (RGB) → resize →
crop + normalise (+ CHW layout, dtype). ``device="cpu"`` runs with ``device_id=None`` (no GPU
needed); ``device="gpu"`` decodes with ``mixed`` (nvJPEG) and leaves the output on the GPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from cvserve.preprocess.sniff import sniff, strip_padding
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

INPUT_NAME = "encoded"

_DALI_DTYPES = {"float32": types.FLOAT, "float16": types.FLOAT16}


def preprocess_graph(encoded: Any, spec: PreprocessSpec, device: Literal["cpu", "gpu"]) -> Any:
    """DALI nodes turning a batch of encoded images into normalised tensors per ``spec``."""
    decode_device = "mixed" if device == "gpu" else "cpu"
    images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB)
    if spec.resize_mode != "shorter_crop":
        raise ValueError(f"resize mode {spec.resize_mode!r} not supported by the DALI graph")
    images = fn.resize(
        images,
        resize_shorter=spec.resize_shorter,
        antialias=spec.antialias,
        interp_type=types.INTERP_LINEAR,
    )
    return fn.crop_mirror_normalize(
        images,
        crop=spec.crop,
        mean=list(spec.mean),
        std=list(spec.std),
        output_layout="CHW",
        dtype=_DALI_DTYPES[spec.dtype],
    )


def build_pipeline(
    spec: PreprocessSpec,
    max_batch_size: int,
    num_threads: int | None = None,
    device: Literal["cpu", "gpu"] = "cpu",
    device_id: int | None = 0,
) -> Pipeline:
    """A built DALI pipeline with one external input named `INPUT_NAME`."""

    @pipeline_def(
        batch_size=max_batch_size,
        num_threads=num_threads or max(1, os.cpu_count() or 1),
        device_id=device_id if device == "gpu" else None,
        prefetch_queue_depth=1,
    )
    def _pipeline() -> Any:
        encoded = fn.external_source(name=INPUT_NAME, dtype=types.UINT8, ndim=1)
        return preprocess_graph(encoded, spec, device)

    pipe = _pipeline()
    pipe.build()
    return pipe


class DaliPreprocessor:
    """Runs a `PreprocessSpec` through DALI on lists of encoded images.

    `__call__` never raises for bad images: each result is an array ``(3, H, W)`` or the
    `PreprocessError` of that image, so one bad image fails only itself.
    """

    def __init__(
        self,
        spec: PreprocessSpec,
        max_batch_size: int = 32,
        num_threads: int | None = None,
        device: Literal["cpu", "gpu"] = "cpu",
    ) -> None:
        self.spec = spec
        self.max_batch_size = max_batch_size
        self.pipeline = build_pipeline(spec, max_batch_size, num_threads, device)

    def __call__(self, images: Sequence[bytes | np.ndarray]) -> list[np.ndarray | PreprocessError]:
        results: list[np.ndarray | PreprocessError | None] = [None] * len(images)
        valid: list[tuple[int, np.ndarray]] = []
        formats: dict[int, str] = {}
        for index, image in enumerate(images):
            data = strip_padding(bytes(image) if not isinstance(image, bytes) else image)
            try:
                formats[index] = sniff(data, self.spec.max_pixels).format
            except PreprocessError as exc:
                results[index] = PreprocessError(exc.reason, index)
                continue
            valid.append((index, np.frombuffer(data, dtype=np.uint8)))
        for start in range(0, len(valid), self.max_batch_size):
            chunk = valid[start : start + self.max_batch_size]
            for (index, _), output in zip(chunk, self._run_isolating_errors(chunk), strict=True):
                if isinstance(output, PreprocessError):
                    output = PreprocessError(
                        f"corrupt {formats[index].upper()}: {output.reason}", index
                    )
                results[index] = output
        return [r for r in results if r is not None]

    def run_batch(self, images: Sequence[bytes | np.ndarray]) -> np.ndarray:
        """All images as one ``(N, 3, H, W)`` array; raises the first image's `PreprocessError`."""
        outputs = self(images)
        for output in outputs:
            if isinstance(output, PreprocessError):
                raise output
        return np.stack(outputs)  # type: ignore[arg-type]

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.pipeline.feed_input(INPUT_NAME, arrays)
        (output,) = self.pipeline.run()
        if hasattr(output, "as_cpu"):
            output = output.as_cpu()
        batch = output.as_array()  # a copy: DALI reuses its own buffers on the next run
        return list(batch)

    def _run_isolating_errors(
        self, chunk: list[tuple[int, np.ndarray]]
    ) -> list[np.ndarray | PreprocessError]:
        try:
            return list(self._run([array for _, array in chunk]))
        except RuntimeError:
            if len(chunk) == 1:
                index = chunk[0][0]
                return [PreprocessError("the decoder could not read it", index)]
        # The batch failed: find the culprit(s) by decoding one at a time.
        return [self._run_isolating_errors([item])[0] for item in chunk]
