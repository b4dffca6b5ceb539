"""The float64 reference of a `PreprocessSpec`: plain, slow, and the yardstick of every backend.

Decoding is PIL (``exif_transpose``, ``convert("RGB")``), except 16-bit PNG, read at full depth
with OpenCV (PIL keeps only the high byte of 16-bit RGB) and turned into ``round(v / 257)``.
Resampling is `preprocess.resample.triangle_weights` (the triangle filter, borders clamped: DALI's
exactly) applied as dense float64 matrices (separable), with no intermediate rounding to 8 bits.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cvserve.preprocess.geometry import Placement, meta, placement
from cvserve.preprocess.pixels import orient, to_8bit
from cvserve.preprocess.preprocessor import (
    Encoded,
    PerImagePreprocessor,
    Preprocessed,
    normalize_into,
)
from cvserve.preprocess.resample import triangle_weights
from cvserve.preprocess.spec import PreprocessSpec


def decode_rgb(item: Encoded) -> np.ndarray:
    """Upright RGB, (H, W, 3) uint8."""
    if item.header.format == "png" and item.header.bit_depth == 16:
        raw = cv2.imdecode(np.frombuffer(item.data, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise ValueError("OpenCV could not decode the 16-bit PNG")
        if raw.ndim == 2:
            raw = raw[..., None]
        rgb = raw[..., [0, 0, 0]] if raw.shape[2] < 3 else raw[..., 2::-1]  # grey(+alpha) | BGR(A)
        return np.ascontiguousarray(orient(to_8bit(rgb), item.header.orientation))
    with Image.open(io.BytesIO(item.data)) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def resize(image: np.ndarray, height: int, width: int, antialias: bool) -> np.ndarray:
    """(H, W, C) → float64 (height, width, C)."""
    rows = triangle_weights(image.shape[0], height, antialias)
    cols = triangle_weights(image.shape[1], width, antialias)
    out = np.tensordot(rows, image.astype(np.float64), axes=(1, 0))  # (height, W, C)
    return np.tensordot(cols, out, axes=(1, 1)).transpose(1, 0, 2)  # (height, width, C)


def reference_preprocess(rgb: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, Placement]:
    """Upright (H, W, 3) RGB → float64 pixels of ``spec.output_shape``, and the placement."""
    p = placement(rgb.shape[0], rgb.shape[1], spec)
    resized = resize(rgb, p.resized_h, p.resized_w, spec.antialias)
    canvas = normalize_into(np.empty((p.out_h, p.out_w, 3)), resized, p, spec)
    return (canvas.transpose(2, 0, 1) if spec.layout == "CHW" else canvas), p


class ReferencePreprocessor(PerImagePreprocessor):
    """The reference as a backend: float64 pixels whatever ``spec.dtype``, on the CPU."""

    name = "reference"
    filter = "float64 triangle, radius max(1, in/out) with antialias, borders clamped"
    decoder_errors = (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)

    def _one(self, item: Encoded) -> Preprocessed:
        pixels, p = reference_preprocess(decode_rgb(item), self.spec)
        return Preprocessed(pixels, meta(p))
