"""The spec's resampling filter: linear (a triangle), widened to ``in / out`` input pixels when
downscaling with antialias, on pixel centres; taps beyond the image take the edge pixel (clamped
borders). That is DALI's ``INTERP_LINEAR`` with ``antialias`` exactly; PIL's BILINEAR and
torchvision's ``antialias=True`` are the same inside the image and renormalise at the borders
instead (a difference on the outermost output row and column only)."""

from __future__ import annotations

import math

import numpy as np


def triangle_weights(size_in: int, size_out: int, antialias: bool) -> np.ndarray:
    """(size_out, size_in) float64 weights along one axis; each row sums to 1."""
    scale = size_in / size_out
    radius = max(1.0, scale) if antialias else 1.0
    centres = (np.arange(size_out) + 0.5) * scale  # output pixel centres in input coordinates
    reach = math.ceil(radius) + 1
    taps = np.arange(-reach, size_in + reach)  # pixel indices, some beyond the image
    weights = np.clip(1.0 - np.abs(taps[None, :] + 0.5 - centres[:, None]) / radius, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    clamped = np.zeros((size_in, size_out))
    np.add.at(clamped, np.clip(taps, 0, size_in - 1), weights.T)  # beyond the edge: edge pixel
    return clamped.T


def banded_resize(image: np.ndarray, height: int, width: int, antialias: bool) -> np.ndarray:
    """(H, W, C) → float32 (height, width, C) with `triangle_weights`, visiting only the taps
    each output uses (rows first). Exact but slower than a library resize: for mild downscales."""
    out = image.astype(np.float32)
    for axis, size_out in ((0, height), (1, width)):
        weights = triangle_weights(out.shape[axis], size_out, antialias).astype(np.float32)
        nonzero = weights > 0
        first = nonzero.argmax(axis=1)
        taps = int((out.shape[axis] - nonzero[:, ::-1].argmax(axis=1) - first).max())
        index = first[:, None] + np.arange(taps)
        inside = index < out.shape[axis]
        index = np.where(inside, index, out.shape[axis] - 1)
        tap_weights = np.take_along_axis(weights, index, axis=1) * inside
        shape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
        acc = np.take(out, index[:, 0], axis=axis) * tap_weights[:, 0].reshape(shape)
        for k in range(1, taps):
            acc += np.take(out, index[:, k], axis=axis) * tap_weights[:, k].reshape(shape)
        out = acc
    return out
