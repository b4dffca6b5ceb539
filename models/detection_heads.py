"""Decoding the outputs of detectors cvserve did not build: box formats, raw YOLO-style heads,
non-maximum suppression. Torch tensors on any device (results on the input's); boxes in
model-input pixels, x1, y1, x2, y2.

Box formats: ``xyxy`` (corners), ``xywh`` (top-left corner, width, height), ``cxcywh`` (centre,
width, height); ``normalized`` boxes are fractions of the model input's width and height.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import Tensor

# torch is imported by the functions that use it: a pipeline file is read (BOX_FORMATS) without
# loading torch.

BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
BOX_FORMATS: tuple[str, ...] = ("xyxy", "xywh", "cxcywh")


def to_xyxy(
    boxes: Tensor,
    box_format: BoxFormat,
    normalized: bool = False,
    input_size: tuple[int, int] | None = None,
) -> Tensor:
    """Boxes (..., 4) in ``box_format`` → float64 (..., 4) x1, y1, x2, y2 in model-input pixels;
    ``normalized`` boxes need ``input_size`` = (H, W) of the model input."""
    import torch

    b = boxes.to(torch.float64)
    if box_format == "xyxy":
        out = b.clone()
    elif box_format == "xywh":
        out = torch.cat([b[..., :2], b[..., :2] + b[..., 2:4]], dim=-1)
    elif box_format == "cxcywh":
        half = b[..., 2:4] / 2
        out = torch.cat([b[..., :2] - half, b[..., :2] + half], dim=-1)
    else:
        raise ValueError(f"box format {box_format!r}: choose from {BOX_FORMATS}")
    if normalized:
        if input_size is None:
            raise ValueError("normalized boxes need the model input size")
        h, w = input_size
        out = out * torch.tensor([w, h, w, h], dtype=torch.float64, device=out.device)
    return out


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression (``torchvision.ops.nms``): int64 indices of the boxes
    (M, 4) xyxy kept, best score first (ties keep the lower index first); a box is dropped when
    its IoU with a kept one exceeds ``iou_threshold`` (IoU in float64; torchvision's CUDA kernel
    may hold the threshold as a float32)."""
    import torch
    import torchvision

    b = boxes.to(torch.float64).reshape(-1, 4)
    order = torch.sort(-scores.to(torch.float64).reshape(-1), stable=True).indices
    # Scores strictly decreasing in our order: torchvision's own sort cannot reorder ties.
    rank = torch.arange(len(order), 0, -1, dtype=torch.float64, device=b.device)
    return order[torchvision.ops.nms(b[order], rank, iou_threshold)]


def batched_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """`nms` within each class (boxes of different classes never suppress each other): int64
    indices kept, best score first."""
    import torch

    b = boxes.to(torch.float64).reshape(-1, 4)
    if b.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=b.device)
    # Shift each class's boxes apart so that boxes of two classes never overlap (the span, not
    # torchvision's max + 1, which does not separate boxes with negative coordinates).
    offset = classes.to(torch.float64) * (b.max() - b.min() + 1.0)
    return nms(b + offset[:, None], scores, iou_threshold)


def yolo_candidates(
    head: Tensor,
    *,
    anchors_last: bool = True,
    objectness: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """One image's raw head → (boxes (A, 4) float32 as the head writes them, best class score
    (A,) float32, class (A,) int64; the lowest class on ties). ``head`` is (4 + C, A) with
    ``anchors_last`` (YOLOv8-style), else (A, 4 + C); with ``objectness`` a fifth row/column
    multiplies the class scores (YOLOv5)."""
    import torch

    rows = head.to(torch.float32)
    rows = rows.T if anchors_last else rows
    boxes = rows[:, :4]
    classes = rows[:, 5:] if objectness else rows[:, 4:]
    if classes.shape[1] == 0:
        raise ValueError(
            f"a YOLO head needs 4 box values and at least one class: {tuple(head.shape)}"
        )
    if objectness:
        classes = classes * rows[:, 4:5]
    labels = classes.argmax(dim=1)
    return boxes, classes.gather(1, labels[:, None])[:, 0], labels.to(torch.int64)
