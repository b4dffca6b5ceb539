"""Postprocessing per task, as plain NumPy/OpenCV functions (the Triton adapter only wires them).

Results go back to original image coordinates through the preprocessing stage's ``META``
(N, 6) = (orig_h, orig_w, scale_y, scale_x, pad_top, pad_left): a model-input point (x, y) is
``((x - pad_left) / scale_x, (y - pad_top) / scale_y)`` in the original image.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from cvserve.preprocess.geometry import to_original

MASK_PAD = 255  # mask value past an image's own size in a batch of different sizes


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over the last axis, then the ``k`` best classes.

    ``logits`` (N, C) float → labels (N, k) int64 and scores (N, k) float32, best first.
    """
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    k = min(k, logits.shape[-1])
    # Stable sort on -p: ties keep the lower class index first.
    labels = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    scores = np.take_along_axis(probabilities, labels, axis=-1)
    return labels.astype(np.int64), scores.astype(np.float32)


def _sizes(meta: np.ndarray) -> np.ndarray:
    return np.rint(meta[:, :2]).astype(np.int32)


def to_original_map(plane: np.ndarray, meta_row: np.ndarray, interpolation: int) -> np.ndarray:
    """Resample an (h, w) plane at model-input resolution onto the original image grid."""
    orig_h, orig_w, scale_y, scale_x, pad_top, pad_left = (float(v) for v in meta_row)
    # Original pixel centre (x + 0.5) lands at (x + 0.5) * scale + pad in model-input coordinates.
    matrix = np.array(
        [
            [scale_x, 0.0, 0.5 * scale_x + pad_left - 0.5],
            [0.0, scale_y, 0.5 * scale_y + pad_top - 0.5],
        ],
        dtype=np.float64,
    )
    return cv2.warpAffine(
        plane,
        matrix,
        (round(orig_w), round(orig_h)),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _stack_padded(planes: list[np.ndarray], fill: float, dtype: np.dtype) -> np.ndarray:
    height = max(p.shape[0] for p in planes)
    width = max(p.shape[1] for p in planes)
    out = np.full((len(planes), height, width), fill, dtype=dtype)
    for i, plane in enumerate(planes):
        out[i, : plane.shape[0], : plane.shape[1]] = plane
    return out


def segmentation_masks(logits: np.ndarray, meta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel argmax class at the original size.

    ``logits`` (N, C, h, w) → mask (N, H, W) uint8 (``MASK_PAD`` past each image's own size when
    sizes differ) and size (N, 2) int32 = (orig_h, orig_w).
    """
    classes = np.asarray(logits).argmax(axis=1).astype(np.uint8)
    planes = [to_original_map(c, m, cv2.INTER_NEAREST) for c, m in zip(classes, meta, strict=True)]
    return _stack_padded(planes, MASK_PAD, np.uint8), _sizes(meta)


def depth_maps(depth: np.ndarray, meta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative depth at the original size: ``depth`` (N, 1, h, w) → (N, H, W) float16 (0 past
    each image's own size) and size (N, 2) int32."""
    planes = [
        to_original_map(d[0].astype(np.float32), m, cv2.INTER_LINEAR)
        for d, m in zip(np.asarray(depth), meta, strict=True)
    ]
    return _stack_padded(planes, 0.0, np.float16), _sizes(meta)


def ranked_above(scores: np.ndarray, threshold: float, limit: int | None = None) -> np.ndarray:
    """Indices of ``scores`` (1-D) at least ``threshold``, best first (ties keep their order),
    at most ``limit``."""
    s = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    return order[s[order] >= threshold][:limit]


def detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    count: np.ndarray,
    meta: np.ndarray,
    score_threshold: float,
    max_detections: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Detections above ``score_threshold``, best first, at most ``max_detections``, with boxes
    (x1, y1, x2, y2) mapped to original pixels and clipped to the image.

    Inputs: boxes (N, K, 4), scores (N, K), labels (N, K), count (N, 1), meta (N, 6). Outputs are
    zero-padded to ``max_detections``: boxes float32, scores float32, labels int64, count (N, 1)
    int32.
    """
    n = len(boxes)
    out_boxes = np.zeros((n, max_detections, 4), np.float32)
    out_scores = np.zeros((n, max_detections), np.float32)
    out_labels = np.zeros((n, max_detections), np.int64)
    out_count = np.zeros((n, 1), np.int32)
    for i in range(n):
        valid = int(np.asarray(count).reshape(n)[i])
        s = np.asarray(scores[i, :valid], np.float32)
        keep = ranked_above(s, score_threshold, max_detections)
        orig_h, orig_w = (float(v) for v in meta[i][:2])
        mapped = to_original(boxes[i, keep], meta[i])
        mapped[:, 0::2] = np.clip(mapped[:, 0::2], 0, orig_w)
        mapped[:, 1::2] = np.clip(mapped[:, 1::2], 0, orig_h)
        m = len(keep)
        out_boxes[i, :m] = mapped
        out_scores[i, :m] = s[keep]
        out_labels[i, :m] = labels[i, keep]
        out_count[i, 0] = m
    return out_boxes, out_scores, out_labels, out_count


def l2_normalize(embeddings: np.ndarray) -> tuple[np.ndarray]:
    """(N, D) → (N, D) float32 with unit L2 norm per row."""
    e = np.asarray(embeddings, np.float32)
    return (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12),)


# name -> function; a postprocess stage names its function and passes the rest as keywords.
FUNCTIONS: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {
    "top_k": top_k,
    "segmentation_masks": segmentation_masks,
    "depth_maps": depth_maps,
    "detections": detections,
    "l2_normalize": l2_normalize,
}
