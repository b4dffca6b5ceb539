"""Where a resized image lands in the model input, and how to map results back (the META contract).

`placement` is the one formula of every resize mode. It uses only ``+ - * //``, comparisons and
``minimum``/``maximum`` on integers, so the same function runs on Python ints (OpenCV,
torchvision, reference backends) and on DALI graph nodes (`preprocess.dali`): all backends agree
on every size by construction.

META, float32 [6] per image: ``(orig_h, orig_w, scale_y, scale_x, pad_top, pad_left)`` with
``x_orig = (x - pad_left) / scale_x`` and ``y_orig = (y - pad_top) / scale_y`` for a point
``(x, y)`` of the model input, in continuous pixel coordinates (pixel ``i`` spans ``[i, i + 1)``).
The original size is the upright (EXIF-oriented) one. ``shorter_crop`` pads are minus the crop
offset (<= 0); ``fixed``, ``letterbox_top_left`` and ``fit_height`` pads are 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cvserve.preprocess.spec import PreprocessSpec

META_FIELDS: tuple[str, ...] = ("orig_h", "orig_w", "scale_y", "scale_x", "pad_top", "pad_left")


@dataclass(frozen=True)
class Placement:
    """An image of ``orig`` size resized to ``resized`` size, its top-left corner at ``top``,
    ``left`` in an output of ``out`` size (negative: cropped). Sizes are (height, width) in
    pixels; the fields are ints, or DALI nodes when built inside a DALI graph."""

    orig_h: Any
    orig_w: Any
    resized_h: Any
    resized_w: Any
    top: Any
    left: Any
    out_h: Any = None
    out_w: Any = None


def _round_ratio(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator`` rounded half up, for positive integers."""
    return (2 * numerator + denominator) // (2 * denominator)


def _centre_offset(resized: Any, out: Any) -> Any:
    """Offset of a centred ``resized`` extent in ``out``: a crop anchor ``(resized - out) / 2``
    rounded half up (as DALI's crop), a pad ``(out - resized) / 2`` rounded down. The sum stays
    positive so ``//`` floors in every integer arithmetic (C truncates negatives)."""
    return out - (resized + out + 1) // 2


def placement(
    orig_h: Any,
    orig_w: Any,
    spec: PreprocessSpec,
    minimum: Callable[[Any, Any], Any] = min,
    maximum: Callable[[Any, Any], Any] = max,
) -> Placement:
    """The placement of an upright ``orig_h`` x ``orig_w`` image under ``spec``'s resize mode."""
    out_h, out_w = spec.output_size
    if spec.resize_mode == "fixed":
        resized_h, resized_w = out_h, out_w
    elif spec.resize_mode == "shorter_crop":
        shorter = minimum(orig_h, orig_w)
        resized_h = _round_ratio(orig_h * spec.resize_shorter, shorter)
        resized_w = _round_ratio(orig_w * spec.resize_shorter, shorter)
    elif spec.resize_mode == "fit_height":
        resized_h = out_h
        resized_w = maximum(minimum(_round_ratio(orig_w * out_h, orig_h), out_w), 1)
    else:  # letterbox, dynamic: scale = min(out_h / orig_h, out_w / orig_w), a ratio of ints
        height_bound = orig_h * out_w >= orig_w * out_h
        numerator = height_bound * out_h + (1 - height_bound) * out_w
        denominator = height_bound * orig_h + (1 - height_bound) * orig_w
        resized_h = maximum(_round_ratio(orig_h * numerator, denominator), 1)
        resized_w = maximum(_round_ratio(orig_w * numerator, denominator), 1)
    if spec.dynamic:
        # Scaled down only: an image that fits keeps its size (``fits`` is 0 or 1, so the same
        # arithmetic runs on DALI nodes). Then each side padded up to a multiple.
        fits = (orig_h <= out_h) * (orig_w <= out_w)
        resized_h = fits * orig_h + (1 - fits) * resized_h
        resized_w = fits * orig_w + (1 - fits) * resized_w
        m = spec.multiple_of
        padded_h, padded_w = (resized_h + m - 1) // m * m, (resized_w + m - 1) // m * m
        return Placement(orig_h, orig_w, resized_h, resized_w, 0, 0, padded_h, padded_w)
    if spec.resize_mode in ("letterbox_top_left", "fit_height"):
        return Placement(orig_h, orig_w, resized_h, resized_w, 0, 0, out_h, out_w)
    return Placement(
        orig_h,
        orig_w,
        resized_h,
        resized_w,
        _centre_offset(resized_h, out_h),
        _centre_offset(resized_w, out_w),
        out_h,
        out_w,
    )


def meta_values(p: Placement) -> tuple[Any, ...]:
    """The six META values of a placement, in `META_FIELDS` order. Works on Python ints and on
    DALI data nodes alike (the DALI graph computes META with this same formula)."""
    return (p.orig_h, p.orig_w, p.resized_h / p.orig_h, p.resized_w / p.orig_w, p.top, p.left)


def meta(p: Placement) -> np.ndarray:
    """The META vector of a placement (Python ints): float32 [6], see `META_FIELDS`."""
    return np.array(meta_values(p), dtype=np.float32)


def to_original(boxes: np.ndarray, meta: np.ndarray) -> np.ndarray:
    """Boxes (N, 4) ``x1, y1, x2, y2`` in model-input pixels → float64 boxes in the original
    (upright) image's pixels, using one image's META [6]. No clipping."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    _, _, scale_y, scale_x, pad_top, pad_left = np.asarray(meta, dtype=np.float64)
    out = np.empty_like(boxes)
    out[:, 0::2] = (boxes[:, 0::2] - pad_left) / scale_x
    out[:, 1::2] = (boxes[:, 1::2] - pad_top) / scale_y
    return out


@dataclass(frozen=True)
class Window:
    """The part of a placed image visible in the output: ``output[out_rows, out_cols]`` =
    ``resized[src_rows, src_cols]`` (everything else of the output is padding)."""

    out_rows: slice
    out_cols: slice
    src_rows: slice
    src_cols: slice


def visible_window(p: Placement, spec: PreprocessSpec) -> Window:
    """The window of a placement (Python ints) inside its output canvas (``p.out_h`` x
    ``p.out_w``)."""
    out_h, out_w = p.out_h, p.out_w
    rows = _overlap(p.top, p.resized_h, out_h)
    cols = _overlap(p.left, p.resized_w, out_w)
    return Window(rows[0], cols[0], rows[1], cols[1])


def _overlap(offset: int, size: int, out: int) -> tuple[slice, slice]:
    start, stop = max(offset, 0), min(offset + size, out)
    return slice(start, stop), slice(start - offset, stop - offset)
