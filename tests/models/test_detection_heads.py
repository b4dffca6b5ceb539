"""Decoding detectors cvserve did not build (`models.detection_heads`): box formats, NMS that
keeps ties in order and never lets two classes suppress each other, raw YOLO heads."""

from __future__ import annotations

import pytest
import torch

from cvserve.models.detection_heads import batched_nms, nms, to_xyxy, yolo_candidates

CORNERS = torch.tensor([[10.0, 20.0, 50.0, 80.0]])


@pytest.mark.parametrize(
    ("box", "box_format"),
    [
        ([10.0, 20.0, 50.0, 80.0], "xyxy"),
        ([10.0, 20.0, 40.0, 60.0], "xywh"),
        ([30.0, 50.0, 40.0, 60.0], "cxcywh"),
    ],
)
def test_every_format_gives_the_same_corners(box: list[float], box_format: str) -> None:
    got = to_xyxy(torch.tensor([box]), box_format)  # type: ignore[arg-type]
    assert got.dtype == torch.float64 and torch.equal(got, CORNERS.double())


def test_normalized_boxes_scale_by_the_input_size_and_need_it() -> None:
    got = to_xyxy(torch.tensor([[0.1, 0.25, 0.5, 1.0]]), "xyxy", True, (80, 100))
    torch.testing.assert_close(got, CORNERS.double())
    with pytest.raises(ValueError, match="need the model input size"):
        to_xyxy(CORNERS, "xyxy", normalized=True)
    with pytest.raises(ValueError, match="box format 'yxyx'"):
        to_xyxy(CORNERS, "yxyx")  # type: ignore[arg-type]


def test_nms_keeps_the_best_of_overlapping_boxes_and_ties_in_index_order() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.9])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]  # 3 ties 1 but overlaps it; 0 loses
    assert nms(boxes, scores, 1.0).tolist() == [1, 3, 2, 0]  # nothing suppressed: score order


def test_boxes_of_two_classes_never_suppress_each_other() -> None:
    boxes = torch.tensor([[-5, -5, 5, 5], [-5, -5, 5, 5.0]])
    scores = torch.tensor([0.9, 0.8])
    assert batched_nms(boxes, scores, torch.tensor([0, 1]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([1, 1]), 0.5).tolist() == [0]
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.5).numel() == 0


def test_a_yolo_head_in_either_orientation_with_objectness() -> None:
    anchors = torch.tensor([[1, 2, 3, 4, 0.5, 0.2, 0.9], [5, 6, 7, 8, 1.0, 0.6, 0.3]])  # (A, 4+1+2)
    boxes, scores, labels = yolo_candidates(anchors, anchors_last=False, objectness=True)
    assert boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]] and labels.tolist() == [1, 0]
    assert scores.tolist() == pytest.approx([0.45, 0.6])
    transposed = yolo_candidates(anchors.T, anchors_last=True, objectness=True)
    assert all(torch.equal(a, b) for a, b in zip(transposed, (boxes, scores, labels), strict=True))
    with pytest.raises(ValueError, match="at least one class"):
        yolo_candidates(torch.zeros(3, 4), anchors_last=False)
