"""Postprocessing per task, as plain NumPy/OpenCV functions (the Triton adapter only wires them).

Results go back to original image coordinates through the preprocessing stage's ``META``
(N, 6) = (orig_h, orig_w, scale_y, scale_x, pad_top, pad_left): a model-input point (x, y) is
``((x - pad_left) / scale_x, (y - pad_top) / scale_y)`` in the original image.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from cvserve.models.detection_heads import BoxFormat, batched_nms, nms, to_xyxy, yolo_candidates
from cvserve.preprocess.geometry import to_original

MASK_PAD = 255  # mask value past an image's own size in a batch of different sizes


def top_k(logits: np.ndarray, k: int, softmax: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over the last axis (unless the model already gives scores: ``softmax=False``),
    then the ``k`` best classes.

    ``logits`` (N, C) float → labels (N, k) int64 and scores (N, k) float32, best first.
    """
    logits = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    probabilities = logits
    if softmax:
        probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
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


def _pack_detections(
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]], meta: np.ndarray, max_detections: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per image (boxes (M, 4) xyxy in model-input pixels, scores (M,), labels (M,)), best first
    → zero-padded (N, max_detections, ...) outputs, boxes mapped to original pixels and clipped
    to the image."""
    n = len(found)
    out_boxes = np.zeros((n, max_detections, 4), np.float32)
    out_scores = np.zeros((n, max_detections), np.float32)
    out_labels = np.zeros((n, max_detections), np.int64)
    out_count = np.zeros((n, 1), np.int32)
    for i, (boxes, scores, labels) in enumerate(found):
        m = min(len(scores), max_detections)
        orig_h, orig_w = (float(v) for v in meta[i][:2])
        mapped = to_original(boxes[:m], meta[i])
        mapped[:, 0::2] = np.clip(mapped[:, 0::2], 0, orig_w)
        mapped[:, 1::2] = np.clip(mapped[:, 1::2], 0, orig_h)
        out_boxes[i, :m] = mapped
        out_scores[i, :m] = scores[:m]
        out_labels[i, :m] = labels[:m]
        out_count[i, 0] = m
    return out_boxes, out_scores, out_labels, out_count


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
    found = []
    for i in range(n):
        valid = int(np.asarray(count).reshape(n)[i])
        s = np.asarray(scores[i, :valid], np.float32)
        keep = ranked_above(s, score_threshold, max_detections)
        found.append((np.asarray(boxes[i, keep]), s[keep], np.asarray(labels[i, keep])))
    return _pack_detections(found, meta, max_detections)


def _suppressed(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    score_threshold: float,
    iou_threshold: float | None,
    class_agnostic: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's candidates at least ``score_threshold``, through NMS (class-aware unless
    ``class_agnostic``; none when ``iou_threshold`` is None), best first."""
    keep = ranked_above(scores, score_threshold)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if iou_threshold is not None:
        kept = (
            nms(boxes, scores, iou_threshold)
            if class_agnostic
            else batched_nms(boxes, scores, labels, iou_threshold)
        )
        boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
    return boxes, scores.astype(np.float32), labels.astype(np.int64)


def box_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    meta: np.ndarray,
    count: np.ndarray | None = None,
    *,
    score_threshold: float,
    max_detections: int,
    box_format: BoxFormat = "xyxy",
    normalized: bool = False,
    input_size: tuple[int, int] | None = None,
    iou_threshold: float | None = None,
    class_agnostic: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A detector that writes boxes, scores and classes apart: boxes (N, K, 4) in
    ``box_format`` (``normalized``: fractions of ``input_size`` (H, W)), scores (N, K), labels
    (N, K), optionally count (N, 1) valid per image → the outputs of `detections`, with NMS when
    ``iou_threshold`` is set."""
    found = []
    for i in range(len(boxes)):
        valid = len(scores[i]) if count is None else int(np.asarray(count).reshape(-1)[i])
        xyxy = to_xyxy(boxes[i, :valid], box_format, normalized, input_size)
        found.append(
            _suppressed(
                xyxy,
                np.asarray(scores[i, :valid], np.float64),
                np.asarray(labels[i, :valid]).astype(np.int64),
                score_threshold,
                iou_threshold,
                class_agnostic,
            )
        )
    return _pack_detections(found, meta, max_detections)


def yolo_detections(
    head: np.ndarray,
    meta: np.ndarray,
    *,
    score_threshold: float,
    max_detections: int,
    iou_threshold: float = 0.45,
    box_format: BoxFormat = "cxcywh",
    normalized: bool = False,
    input_size: tuple[int, int] | None = None,
    anchors_last: bool = True,
    objectness: bool = False,
    class_agnostic: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A raw YOLO-style head (N, 4 + C, A) (``anchors_last``; else (N, A, 4 + C)): each anchor's
    best class, scores at least ``score_threshold``, NMS at ``iou_threshold`` → the outputs of
    `detections`."""
    found = []
    for one in np.asarray(head):
        raw, scores, labels = yolo_candidates(one, anchors_last=anchors_last, objectness=objectness)
        xyxy = to_xyxy(raw, box_format, normalized, input_size)
        found.append(
            _suppressed(xyxy, scores, labels, score_threshold, iou_threshold, class_agnostic)
        )
    return _pack_detections(found, meta, max_detections)


def sigmoid_masks(
    logits: np.ndarray, meta: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """A one-channel map (N, 1, h, w) or (N, h, w) of logits → mask (N, H, W) uint8, 1 where
    sigmoid(logit) > ``threshold``, at the original size (``MASK_PAD`` past each image's own
    size), and size (N, 2) int32."""
    x = np.asarray(logits, np.float64)
    x = x[:, 0] if x.ndim == 4 else x
    binary = (1.0 / (1.0 + np.exp(-x)) > threshold).astype(np.uint8)
    planes = [to_original_map(b, m, cv2.INTER_NEAREST) for b, m in zip(binary, meta, strict=True)]
    return _stack_padded(planes, MASK_PAD, np.uint8), _sizes(meta)


def l2_normalize(embeddings: np.ndarray) -> tuple[np.ndarray]:
    """(N, D) → (N, D) float32 with unit L2 norm per row."""
    e = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
    return (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12),)


def flat_float32(embeddings: np.ndarray) -> tuple[np.ndarray]:
    """(N, ...) → (N, D) float32, values as the model gave them."""
    return (np.asarray(embeddings, np.float32).reshape(len(embeddings), -1),)


# name -> function; a postprocess stage names its function and passes the rest as keywords.
FUNCTIONS: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {
    "top_k": top_k,
    "segmentation_masks": segmentation_masks,
    "depth_maps": depth_maps,
    "detections": detections,
    "box_detections": box_detections,
    "yolo_detections": yolo_detections,
    "sigmoid_masks": sigmoid_masks,
    "l2_normalize": l2_normalize,
    "flat_float32": flat_float32,
}
