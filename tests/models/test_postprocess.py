from __future__ import annotations

import numpy as np
import torch

from cvserve.models.postprocess import (
    MASK_PAD,
    depth_maps,
    detections,
    l2_normalize,
    segmentation_masks,
    top_k,
)


def letterbox_meta(orig_h: int, orig_w: int, size: int) -> np.ndarray:
    scale = size / max(orig_h, orig_w)
    pad_top = (size - orig_h * scale) / 2
    pad_left = (size - orig_w * scale) / 2
    return np.array([[orig_h, orig_w, scale, scale, pad_top, pad_left]], np.float32)


def test_top_k_matches_torch_softmax_topk() -> None:
    logits = np.random.default_rng(0).normal(size=(4, 1000)).astype(np.float32)
    labels, scores = top_k(logits, 5)
    expected = torch.softmax(torch.from_numpy(logits), dim=-1).topk(5)
    np.testing.assert_array_equal(labels, expected.indices.numpy())
    np.testing.assert_allclose(scores, expected.values.numpy(), rtol=1e-5)
    assert labels.dtype == np.int64 and scores.dtype == np.float32


def test_detection_boxes_map_back_through_the_letterbox() -> None:
    meta = letterbox_meta(480, 640, 320)  # scale 0.5, 40 px padding top and bottom
    original = np.array([[100.0, 50.0, 300.0, 250.0]])
    model_box = original * 0.5 + np.array([0, 40, 0, 40])
    boxes = np.zeros((1, 3, 4), np.float32)
    boxes[0, 0] = model_box
    boxes[0, 1] = [0, 0, 10, 10]
    scores = np.array([[0.2, 0.9, 0.0]], np.float32)
    labels = np.array([[7, 3, 0]], np.int64)
    out_boxes, out_scores, out_labels, count = detections(
        boxes, scores, labels, np.array([[2]]), meta, score_threshold=0.1, max_detections=5
    )
    assert count.tolist() == [[2]]
    assert out_labels[0, :2].tolist() == [3, 7]  # best first
    np.testing.assert_allclose(out_boxes[0, 1], original[0], atol=1e-4)
    np.testing.assert_allclose(out_boxes[0, 0], [0, 0, 20, 0], atol=1e-4)  # clipped at the top
    assert out_boxes.shape == (1, 5, 4) and out_scores[0, 2:].sum() == 0


def test_detection_threshold_and_max_detections() -> None:
    meta = letterbox_meta(100, 100, 100)
    scores = np.array([[0.9, 0.8, 0.7, 0.1]], np.float32)
    boxes = np.tile(np.array([0, 0, 1, 1], np.float32), (1, 4, 1))
    _, out_scores, _, count = detections(
        boxes, scores, np.zeros((1, 4), np.int64), np.array([[4]]), meta, 0.5, 2
    )
    assert count[0, 0] == 2 and out_scores[0].tolist() == [np.float32(0.9), np.float32(0.8)]


def test_segmentation_mask_returns_to_original_size_and_place() -> None:
    # Model input 8x8 is the whole 16x32 image resized ("fixed"): class 1 on the right half.
    logits = np.zeros((1, 2, 8, 8), np.float32)
    logits[0, 1, :, 4:] = 1.0
    meta = np.array([[16, 32, 8 / 16, 8 / 32, 0, 0]], np.float32)
    mask, size = segmentation_masks(logits, meta)
    assert mask.shape == (1, 16, 32) and mask.dtype == np.uint8
    assert size.tolist() == [[16, 32]]
    assert (mask[0, :, :16] == 0).all() and (mask[0, :, 16:] == 1).all()


def test_masks_of_different_sizes_are_padded() -> None:
    logits = np.zeros((2, 3, 4, 4), np.float32)
    meta = np.array([[8, 8, 0.5, 0.5, 0, 0], [4, 6, 1, 4 / 6, 0, 0]], np.float32)
    mask, size = segmentation_masks(logits, meta)
    assert mask.shape == (2, 8, 8)
    assert (mask[1, 4:, :] == MASK_PAD).all() and (mask[1, :4, :6] == 0).all()
    assert size.tolist() == [[8, 8], [4, 6]]


def test_depth_map_is_float16_at_original_size() -> None:
    depth = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    meta = np.array([[8, 8, 0.5, 0.5, 0, 0]], np.float32)
    out, size = depth_maps(depth, meta)
    assert out.dtype == np.float16 and out.shape == (1, 8, 8)
    assert out[0, 0, 0] < out[0, 7, 7]  # the gradient survives the resampling


def test_l2_normalize() -> None:
    (e,) = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(e[0], [0.6, 0.8])
    assert np.isfinite(e).all()
