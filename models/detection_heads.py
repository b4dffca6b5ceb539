"""Decoding the outputs of detectors cvserve did not build: box formats, raw YOLO-style heads,
non-maximum suppression. Plain NumPy; results in model-input pixels, x1, y1, x2, y2.

Box formats: ``xyxy`` (corners), ``xywh`` (top-left corner, width, height), ``cxcywh`` (centre,
width, height); ``normalized`` boxes are fractions of the model input's width and height.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
BOX_FORMATS: tuple[str, ...] = ("xyxy", "xywh", "cxcywh")


def to_xyxy(
    boxes: np.ndarray,
    box_format: BoxFormat,
    normalized: bool = False,
    input_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Boxes (..., 4) in ``box_format`` → float64 (..., 4) x1, y1, x2, y2 in model-input pixels;
    ``normalized`` boxes need ``input_size`` = (H, W) of the model input."""
    b = np.asarray(boxes, np.float64)
    if box_format == "xyxy":
        out = b.copy()
    elif box_format == "xywh":
        out = np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)
    elif box_format == "cxcywh":
        half = b[..., 2:4] / 2
        out = np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)
    else:
        raise ValueError(f"box format {box_format!r}: choose from {BOX_FORMATS}")
    if normalized:
        if input_size is None:
            raise ValueError("normalized boxes need the model input size")
        h, w = input_size
        out *= np.array([w, h, w, h], np.float64)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the boxes (M, 4) xyxy kept, best score first
    (ties keep the lower index first); a box is dropped when its IoU with a kept one exceeds
    ``iou_threshold`` (as ``torchvision.ops.nms``)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        x1 = np.maximum(b[i, 0], b[rest, 0])
        y1 = np.maximum(b[i, 1], b[rest, 1])
        x2 = np.minimum(b[i, 2], b[rest, 2])
        y2 = np.minimum(b[i, 3], b[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """`nms` within each class (boxes of different classes never suppress each other), as
    ``torchvision.ops.batched_nms``: indices kept, best score first."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if b.size == 0:
        return np.zeros(0, np.int64)
    # Shift each class's boxes apart so that boxes of two classes never overlap.
    offset = (np.asarray(classes, np.float64) * (b.max() - b.min() + 1.0))[:, None]
    return nms(b + offset, scores, iou_threshold)


def yolo_candidates(
    head: np.ndarray,
    *,
    anchors_last: bool = True,
    objectness: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw head → (boxes (A, 4) as the head writes them, best class score (A,),
    class (A,) int64). ``head`` is (4 + C, A) with ``anchors_last`` (YOLOv8-style), else
    (A, 4 + C); with ``objectness`` a fifth row/column multiplies the class scores (YOLOv5)."""
    rows = np.asarray(head, np.float32)
    rows = rows.T if anchors_last else rows
    boxes = rows[:, :4]
    classes = rows[:, 5:] if objectness else rows[:, 4:]
    if classes.shape[1] == 0:
        raise ValueError(f"a YOLO head needs 4 box values and at least one class: {head.shape}")
    if objectness:
        classes = classes * rows[:, 4:5]
    labels = classes.argmax(axis=1)
    return boxes, classes[np.arange(len(labels)), labels], labels.astype(np.int64)
