"""The naive placement the profiler compares against: preprocessing in the client with OpenCV.

Follows the pipeline's `PreprocessSpec` (geometry from `preprocess.geometry`, so META means the
same), one image at a time, each step timed apart: decode, resize + crop/pad, normalize.
"""

from __future__ import annotations

import cv2
import numpy as np

from cvserve.preprocess.geometry import meta, placement, visible_window
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec


class NaivePreprocessor:
    """Encoded bytes → ``spec.output_shape`` tensor of ``spec.dtype`` and META float32 [6]."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self.mean = np.asarray(spec.mean, np.float32)
        self.inv_std = 1.0 / np.asarray(spec.std, np.float32)

    def decode(self, data: bytes) -> np.ndarray:
        """(H, W, 3) uint8 in ``spec.channels`` order."""
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise PreprocessError(f"OpenCV cannot decode {len(data):,} bytes")
        return bgr if self.spec.channels == "BGR" else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def resize_crop(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (H, W, 3) uint8 canvas of the output size, and the image's META."""
        p = placement(rgb.shape[0], rgb.shape[1], self.spec)
        shrinking = p.resized_h < p.orig_h or p.resized_w < p.orig_w
        interpolation = cv2.INTER_AREA if shrinking and self.spec.antialias else cv2.INTER_LINEAR
        resized = cv2.resize(rgb, (p.resized_w, p.resized_h), interpolation=interpolation)
        out_h, out_w = p.out_h, p.out_w
        canvas = np.empty((out_h, out_w, 3), np.uint8)
        canvas[:] = np.round(self.spec.pad_value).astype(np.uint8)
        window = visible_window(p, self.spec)
        canvas[window.out_rows, window.out_cols] = resized[window.src_rows, window.src_cols]
        return canvas, meta(p)

    def normalize(self, canvas: np.ndarray) -> np.ndarray:
        """``(pixel - mean) / std`` in the spec's layout and dtype."""
        pixels = (canvas.astype(np.float32) - self.mean) * self.inv_std
        if self.spec.layout == "CHW":
            pixels = pixels.transpose(2, 0, 1)
        return np.ascontiguousarray(pixels, dtype=self.spec.dtype)
