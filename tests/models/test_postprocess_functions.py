"""The built-in postprocessing on torch tensors: the answers NumPy and OpenCV gave, computed here
by plain references (OpenCV's warpAffine for masks and depth, NumPy for ranking, NMS and box
mapping), and the same answers on CUDA as on the CPU."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
import torch

from cvserve.broker.crops import select_boxes
from cvserve.models.postprocess_functions import (
    FUNCTIONS,
    MASK_PAD,
    box_detections,
    depth_maps,
    detections,
    flat_float32,
    l2_normalize,
    ranked_above,
    segmentation_masks,
    sigmoid_masks,
    to_original_map,
    top_k,
    yolo_detections,
)

T = torch.from_numpy


def letterbox_meta(orig_h: int, orig_w: int, size: int) -> np.ndarray:
    scale = size / max(orig_h, orig_w)
    pad_top = (size - orig_h * scale) / 2
    pad_left = (size - orig_w * scale) / 2
    return np.array([[orig_h, orig_w, scale, scale, pad_top, pad_left]], np.float32)


# --- references: today's answers, computed independently ----------------------------------------


def opencv_map(plane: np.ndarray, row: np.ndarray, interpolation: int) -> np.ndarray:
    """The plane at the original size by cv2.warpAffine, as the NumPy postprocessing did it."""
    _, _, scale_y, scale_x, pad_top, pad_left = (float(v) for v in row)
    matrix = np.array(
        [
            [scale_x, 0.0, 0.5 * scale_x + pad_left - 0.5],
            [0.0, scale_y, 0.5 * scale_y + pad_top - 0.5],
        ]
    )
    size = (round(float(row[1])), round(float(row[0])))
    flags = interpolation | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(plane, matrix, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)


def stacked(planes: list[np.ndarray], fill: float, dtype: Any) -> np.ndarray:
    out = np.full((len(planes), *np.max([p.shape for p in planes], axis=0)), fill, dtype)
    for i, plane in enumerate(planes):
        out[i, : plane.shape[0], : plane.shape[1]] = plane
    return out


def np_sizes(meta: np.ndarray) -> np.ndarray:
    return np.rint(meta[:, :2]).astype(np.int32)


def np_ranked(scores: np.ndarray, threshold: float, limit: int | None = None) -> np.ndarray:
    s = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    return order[s[order] >= threshold][:limit]


def np_top_k(logits: np.ndarray, k: int, softmax: bool) -> tuple[np.ndarray, np.ndarray]:
    x = logits.astype(np.float64).reshape(len(logits), -1)
    p = np.exp(x - x.max(-1, keepdims=True)) if softmax else x
    p = p / p.sum(-1, keepdims=True) if softmax else p
    labels = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    return labels, np.take_along_axis(p, labels, -1).astype(np.float32)


def np_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS, best first (ties: lower index first), IoU in float64 with areas of inverted
    boxes taken as 0."""
    order = list(np.argsort(-scores, kind="stable"))
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order:
        i, order = order[0], order[1:]
        keep.append(i)
        rest = []
        for j in order:
            w = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            h = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            union = area[i] + area[j] - w * h
            if not (union > 0 and w * h / union > iou_threshold):
                rest.append(j)
        order = rest
    return keep


def np_suppressed(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    score_threshold: float,
    iou_threshold: float | None,
    class_agnostic: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = np_ranked(scores, score_threshold)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if iou_threshold is not None and len(boxes):
        shifted = boxes
        if not class_agnostic:  # classes apart: shifted by the span of all boxes
            shifted = boxes + (labels * (boxes.max() - boxes.min() + 1.0))[:, None]
        kept = np_nms(shifted, scores, iou_threshold)
        boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
    return boxes, scores.astype(np.float32), labels.astype(np.int64)


def np_packed(found: list, meta: np.ndarray, max_detections: int) -> tuple[np.ndarray, ...]:
    """Per image (xyxy model-input boxes, scores, labels), best first → zero-padded outputs,
    boxes in original pixels clipped to the image."""
    n = len(found)
    out = (
        np.zeros((n, max_detections, 4), np.float32),
        np.zeros((n, max_detections), np.float32),
        np.zeros((n, max_detections), np.int64),
        np.zeros((n, 1), np.int32),
    )
    for i, (boxes, scores, labels) in enumerate(found):
        m = min(len(scores), max_detections)
        orig_h, orig_w, scale_y, scale_x, pad_top, pad_left = meta[i].astype(np.float64)
        b = np.asarray(boxes[:m], np.float64).reshape(-1, 4)
        b[:, 0::2] = np.clip((b[:, 0::2] - pad_left) / scale_x, 0, orig_w)
        b[:, 1::2] = np.clip((b[:, 1::2] - pad_top) / scale_y, 0, orig_h)
        out[0][i, :m], out[1][i, :m], out[2][i, :m], out[3][i, 0] = b, scores[:m], labels[:m], m
    return out


def np_xyxy(b: np.ndarray, box_format: str, normalized: bool, size: Any) -> np.ndarray:
    b = b.astype(np.float64)
    if box_format == "xywh":
        b = np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], -1)
    elif box_format == "cxcywh":
        b = np.concatenate([b[..., :2] - b[..., 2:4] / 2, b[..., :2] + b[..., 2:4] / 2], -1)
    return b * np.array([size[1], size[0]] * 2) if normalized else b


def reference(name: str, *args: Any, **kw: Any) -> tuple[np.ndarray, ...]:
    """What the NumPy/OpenCV postprocessing answered for ``FUNCTIONS[name]``."""
    if name == "top_k":
        return np_top_k(args[0], min(args[1], args[0][0].size), kw.get("softmax", True))
    if name in ("segmentation_masks", "sigmoid_masks"):
        x, meta = args
        if name == "segmentation_masks":
            planes = x.argmax(axis=1).astype(np.uint8)
        else:
            x = x[:, 0] if x.ndim == 4 else x
            planes = (1 / (1 + np.exp(-x.astype(np.float64))) > kw["threshold"]).astype(np.uint8)
        maps = [opencv_map(p, m, cv2.INTER_NEAREST) for p, m in zip(planes, meta, strict=True)]
        return stacked(maps, MASK_PAD, np.uint8), np_sizes(meta)
    if name == "depth_maps":
        depth, meta = args
        maps = [
            opencv_map(d[0].astype(np.float32), m, cv2.INTER_LINEAR)
            for d, m in zip(depth, meta, strict=True)
        ]
        return stacked(maps, 0.0, np.float16), np_sizes(meta)
    if name == "detections":
        boxes, scores, labels, count, meta, threshold, max_detections = args
        found = []
        for i in range(len(boxes)):
            s = scores[i, : int(count[i, 0])].astype(np.float32)
            keep = np_ranked(s, threshold, max_detections)
            found.append((boxes[i, keep], s[keep], labels[i, keep]))
        return np_packed(found, meta, max_detections)
    if name == "box_detections":
        boxes, scores, labels, meta, *count = args
        found = []
        for i in range(len(boxes)):
            v = int(count[0][i, 0]) if count else scores.shape[1]
            xyxy = np_xyxy(
                boxes[i, :v], kw["box_format"], kw.get("normalized", False), kw.get("input_size")
            )
            s, c = scores[i, :v].astype(np.float64), labels[i, :v].astype(np.int64)
            found.append(
                np_suppressed(
                    xyxy, s, c, kw["score_threshold"], kw["iou_threshold"], kw["class_agnostic"]
                )
            )
        return np_packed(found, meta, kw["max_detections"])
    if name == "yolo_detections":
        head, meta = args
        found = []
        for one in head:
            rows = one.T if kw["anchors_last"] else one
            classes = rows[:, 5:] * rows[:, 4:5] if kw["objectness"] else rows[:, 4:]
            labels = classes.argmax(1)
            scores = classes[np.arange(len(labels)), labels]
            xyxy = np_xyxy(rows[:, :4], "cxcywh", False, None)
            found.append(
                np_suppressed(
                    xyxy,
                    scores,
                    labels,
                    kw["score_threshold"],
                    kw["iou_threshold"],
                    kw["class_agnostic"],
                )
            )
        return np_packed(found, meta, kw["max_detections"])
    if name == "l2_normalize":
        e = args[0].astype(np.float64).reshape(len(args[0]), -1)
        return (
            (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)).astype(np.float32),
        )
    if name == "flat_float32":
        return (args[0].astype(np.float32).reshape(len(args[0]), -1),)
    raise KeyError(name)


# --- seeded random cases of every function -----------------------------------------------------


def random_meta(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """META rows as the preprocessing writes them: letterbox, stretched, or any scale (up and
    down) and pad, for odd original sizes."""
    rows = []
    for _ in range(n):
        oh, ow = (int(v) for v in rng.integers(3, 150, 2))
        kind = rng.integers(0, 3)
        if kind == 0:
            s = min(h / oh, w / ow)
            rows.append([oh, ow, s, s, (h - oh * s) / 2, (w - ow * s) / 2])
        elif kind == 1:
            rows.append([oh, ow, h / oh, w / ow, 0, 0])
        else:
            s = rng.choice([0.1, 0.37, 1.0, 2.5, 7.3]) * rng.uniform(0.9, 1.1)
            rows.append(
                [oh, ow, s, s * rng.uniform(0.5, 2), rng.uniform(-3, 9), rng.uniform(-3, 9)]
            )
    return np.array(rows, np.float32)


Case = tuple[str, tuple[Any, ...], dict[str, Any]]


def random_cases(seed: int) -> tuple[list[Case], np.ndarray]:
    """(function name, positional arguments, options) of every function, and their META."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    h, w = (int(v) for v in rng.integers(3, 40, 2))
    meta = random_meta(rng, n, h, w)
    c = int(rng.integers(2, 30))
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[:, 1] = logits[:, 0]  # a tie: the lower class first
    k = int(rng.integers(1, 20))
    xy, wh = rng.uniform(0, 40, (n, k, 2)), rng.uniform(1, 20, (n, k, 2))
    scores = rng.uniform(size=(n, k)).astype(np.float32)
    scores[:, ::3] = 0.5  # ties
    labels = rng.integers(0, 4, (n, k))
    count = rng.integers(0, k + 1, (n, 1)).astype(np.int32)
    fmt = ("xyxy", "xywh", "cxcywh")[seed % 3]
    anchors, classes, obj = int(rng.integers(1, 60)), int(rng.integers(1, 5)), bool(seed % 2)
    head = np.concatenate(
        [rng.uniform(5, 30, (n, 2, anchors)), rng.uniform(2, 15, (n, 2, anchors)),
         np.round(rng.uniform(size=(n, classes + obj, anchors)), 1)], axis=1,  # ties
    ).astype(np.float32)  # fmt: skip
    head[:, 4, ::4] = 0.75
    last = bool(seed % 3)
    if not last:
        head = np.ascontiguousarray(head.transpose(0, 2, 1))
    box_options = {
        "score_threshold": 0.3,
        "max_detections": int(rng.integers(1, 12)),
        "box_format": fmt,
        "iou_threshold": (None, 0.3, 0.5)[seed % 3],
        "class_agnostic": bool(seed % 2),
    }
    boxes = np.concatenate([xy, wh], -1).astype(np.float32)
    if seed % 4 == 0:
        box_options.update(normalized=True, input_size=(h, w))
        boxes = (boxes / 40).astype(np.float32)
    f16_or_f32 = (np.float32, np.float16)[seed % 2]
    one_channel = ((n, 1, h, w), (n, h, w))[seed % 2]
    corners = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    threshold, max_detections = float(rng.uniform(0, 0.6)), int(rng.integers(1, 10))
    yolo_options = {
        "score_threshold": 0.2,
        "max_detections": int(rng.integers(1, 15)),
        "iou_threshold": (0.3, 0.45, 0.6)[seed % 3],
        "anchors_last": last,
        "objectness": obj,
        "class_agnostic": seed % 5 == 0,
    }
    cases = [
        ("top_k", (logits, int(rng.integers(1, 40))), {}),
        ("top_k", (rng.uniform(size=(n, c, 1, 1)).astype(np.float32), 3), {"softmax": False}),
        (
            "segmentation_masks",
            (np.round(rng.normal(size=(n, c, h, w))).astype(np.float32), meta),
            {},
        ),
        ("depth_maps", (rng.normal(size=(n, 1, h, w)).astype(f16_or_f32), meta), {}),
        (
            "sigmoid_masks",
            (rng.normal(size=one_channel).astype(np.float32), meta),
            {"threshold": float(rng.uniform(0.2, 0.8))},
        ),
        ("detections", (corners, scores, labels, count, meta, threshold, max_detections), {}),
        ("box_detections", (boxes, scores, labels, meta, *[count][: seed % 2]), box_options),
        ("yolo_detections", (head, meta), yolo_options),
        ("l2_normalize", (rng.normal(size=(n, int(rng.integers(1, 600)))).astype(np.float32),), {}),
        ("flat_float32", (rng.normal(size=(n, 3, 1, 2)).astype(np.float16),), {}),
    ]
    return cases, meta


def on(device: str, args: tuple[Any, ...]) -> list[Any]:
    return [T(a).to(device) if isinstance(a, np.ndarray) else a for a in args]


# Float answers that go through exp or a sum (whose last bit depends on the order of the
# operations) may differ from the reference by one float32 ulp; everything else is exact.
WITHIN_ULP = {"top_k", "l2_normalize"}


@pytest.mark.parametrize("seed", range(12))
def test_every_function_answers_as_the_numpy_opencv_postprocessing(seed: int) -> None:
    for name, args, options in random_cases(seed)[0]:
        got = FUNCTIONS[name](*on("cpu", args), **options)
        expected = reference(name, *args, **options)
        assert len(got) == len(expected), name
        for g, e in zip(got, expected, strict=True):
            assert isinstance(g, torch.Tensor), name
            g = g.numpy()
            assert (g.dtype, g.shape) == (e.dtype, e.shape), name
            if name in WITHIN_ULP and g.dtype == np.float32:
                np.testing.assert_array_max_ulp(g, e, maxulp=1)
            else:
                np.testing.assert_array_equal(g, e, err_msg=name)


def test_the_cases_hold_detections_and_masks() -> None:
    """The random cases are not empty: the comparisons above compare something."""
    totals = {"yolo_detections": 0, "box_detections": 0, "detections": 0, "masks": 0}
    for seed in range(12):
        for name, args, options in random_cases(seed)[0]:
            if name in totals:
                totals[name] += int(FUNCTIONS[name](*on("cpu", args), **options)[3].sum())
            if name == "segmentation_masks":
                totals["masks"] += int((FUNCTIONS[name](*on("cpu", args))[0] < MASK_PAD).sum())
    assert min(totals.values()) > 20, totals


# --- masks and depth: OpenCV's warpAffine arithmetic --------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_resampling_equals_opencv_warp_affine(seed: int) -> None:
    """Nearest (uint8 masks) and bilinear (float32 depth) equal cv2.warpAffine bit for bit, for
    scales up and down, pads inside and outside the plane, odd sizes."""
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        (row,) = random_meta(rng, 1, h, w)
        mask = rng.integers(0, 256, (h, w)).astype(np.uint8)
        depth = (rng.normal(size=(h, w)) * 10 ** rng.uniform(-3, 3)).astype(np.float32)
        floats = row.tolist()
        np.testing.assert_array_equal(
            to_original_map(T(mask), floats, "nearest").numpy(),
            opencv_map(mask, row, cv2.INTER_NEAREST),
        )
        np.testing.assert_array_equal(
            to_original_map(T(depth), floats, "linear").numpy(),
            opencv_map(depth, row, cv2.INTER_LINEAR),
        )


def test_segmentation_mask_returns_to_original_size_and_place() -> None:
    # Model input 8x8 is the whole 16x32 image resized ("fixed"): class 1 on the right half.
    logits = torch.zeros((1, 2, 8, 8))
    logits[0, 1, :, 4:] = 1.0
    meta = T(np.array([[16, 32, 8 / 16, 8 / 32, 0, 0]], np.float32))
    mask, size = segmentation_masks(logits, meta)
    assert mask.shape == (1, 16, 32) and mask.dtype == torch.uint8
    assert size.tolist() == [[16, 32]] and size.dtype == torch.int32
    assert (mask[0, :, :16] == 0).all() and (mask[0, :, 16:] == 1).all()


def test_masks_of_different_sizes_are_padded() -> None:
    logits = torch.zeros((2, 3, 4, 4))
    meta = T(np.array([[8, 8, 0.5, 0.5, 0, 0], [4, 6, 1, 4 / 6, 0, 0]], np.float32))
    mask, size = segmentation_masks(logits, meta)
    assert mask.shape == (2, 8, 8)
    assert (mask[1, 4:, :] == MASK_PAD).all() and (mask[1, :4, :6] == 0).all()
    assert size.tolist() == [[8, 8], [4, 6]]


def test_depth_map_is_float16_at_original_size() -> None:
    depth = torch.linspace(0, 1, 16).reshape(1, 1, 4, 4)
    meta = T(np.array([[8, 8, 0.5, 0.5, 0, 0]], np.float32))
    out, size = depth_maps(depth, meta)
    assert out.dtype == torch.float16 and out.shape == (1, 8, 8)
    assert out[0, 0, 0] < out[0, 7, 7]  # the gradient survives the resampling


def test_sigmoid_mask_is_one_above_the_threshold() -> None:
    logits = torch.tensor([[[-1.0, 0.0, 2.0]]])  # sigmoid 0.27, 0.5, 0.88
    meta = T(np.array([[1, 3, 1, 1, 0, 0]], np.float32))
    mask, _ = sigmoid_masks(logits, meta, threshold=0.5)
    assert mask.tolist() == [[[0, 0, 1]]]


# --- classes, detections, embeddings -------------------------------------------------------------


def test_top_k_matches_torch_softmax_topk() -> None:
    logits = T(np.random.default_rng(0).normal(size=(4, 1000)).astype(np.float32))
    labels, scores = top_k(logits, 5)
    expected = torch.softmax(logits, dim=-1).topk(5)
    assert torch.equal(labels, expected.indices)
    torch.testing.assert_close(scores, expected.values, rtol=1e-5, atol=0)
    assert labels.dtype == torch.int64 and scores.dtype == torch.float32


def test_top_k_ties_keep_the_lower_class_first() -> None:
    labels, scores = top_k(torch.tensor([[1.0, 3.0, 1.0, 3.0, 3.0]]), 4)
    assert labels.tolist() == [[1, 3, 4, 0]]
    assert scores[0, 0] == scores[0, 2]


def test_ranked_above_is_best_first_with_ties_in_order() -> None:
    scores = torch.tensor([0.2, 0.9, 0.5, 0.9, 0.1, 0.5])
    assert ranked_above(scores, 0.2).tolist() == [1, 3, 2, 5, 0]
    assert ranked_above(scores, 0.5, limit=3).tolist() == [1, 3, 2]
    assert ranked_above(scores, 0.95).dtype == torch.int64


def test_crops_select_boxes_in_the_order_ranked_above_gives() -> None:
    """The broker's host-side ranking (NumPy, no torch in a worker) is `ranked_above`'s."""
    rng = np.random.default_rng(3)
    scores = rng.choice([0.1, 0.4, 0.4, 0.7, 0.9], size=40).astype(np.float32)
    corners = rng.uniform(0, 50, (40, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(1, 30, (40, 2))], axis=1)
    selected = select_boxes(boxes, scores, 1000, 1000, 0.4, 40)
    order = ranked_above(T(scores), 0.4).numpy()
    expected = [
        (int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2)))
        for x1, y1, x2, y2 in boxes[order]
    ]
    assert selected == expected


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
        T(boxes), T(scores), T(labels), torch.tensor([[2]]), T(meta), 0.1, 5
    )
    assert count.tolist() == [[2]] and count.dtype == torch.int32
    assert out_labels[0, :2].tolist() == [3, 7]  # best first
    np.testing.assert_allclose(out_boxes[0, 1].numpy(), original[0], atol=1e-4)
    np.testing.assert_allclose(out_boxes[0, 0].numpy(), [0, 0, 20, 0], atol=1e-4)  # clipped
    assert out_boxes.shape == (1, 5, 4) and out_scores[0, 2:].sum() == 0


def test_detection_threshold_and_max_detections() -> None:
    meta = letterbox_meta(100, 100, 100)
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    boxes = torch.tensor([0.0, 0, 1, 1]).repeat(1, 4, 1)
    _, out_scores, _, count = detections(
        boxes, scores, torch.zeros((1, 4), dtype=torch.int64), torch.tensor([[4]]), T(meta), 0.5, 2
    )
    assert count[0, 0] == 2 and out_scores[0].tolist() == [np.float32(0.9), np.float32(0.8)]


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    meta = letterbox_meta(100, 100, 100)
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]])
    scores = torch.tensor([[0.8, 0.9, 0.7, 0.6]])
    labels = torch.tensor([[0, 0, 1, 0]])
    options = {"score_threshold": 0.5, "max_detections": 4, "iou_threshold": 0.5}
    _, out_scores, out_labels, count = box_detections(boxes, scores, labels, T(meta), **options)
    assert count.item() == 3 and out_labels[0, :3].tolist() == [0, 1, 0]
    assert out_scores[0, :3].tolist() == [np.float32(0.9), np.float32(0.7), np.float32(0.6)]
    _, _, _, count = box_detections(boxes, scores, labels, T(meta), class_agnostic=True, **options)
    assert count.item() == 2  # the class-1 box overlaps the best one


def test_nms_drops_only_above_the_threshold_and_classes_never_meet() -> None:
    meta = letterbox_meta(100, 100, 100)
    half = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 5]]])  # IoU exactly 0.5
    options = {"score_threshold": 0.0, "max_detections": 4, "class_agnostic": True}
    two = torch.tensor([[0.9, 0.8]])
    _, _, _, count = box_detections(
        half, two, torch.zeros((1, 2)), T(meta), iou_threshold=0.5, **options
    )
    assert count.item() == 2
    _, _, _, count = box_detections(
        half, two, torch.zeros((1, 2)), T(meta), iou_threshold=0.49, **options
    )
    assert count.item() == 1
    # The same box in two classes, at negative coordinates: class-aware NMS keeps both.
    same = torch.tensor([[[-100.0, -100, 0, 0], [-100, -100, 0, 0]]])
    options["class_agnostic"] = False
    _, _, _, count = box_detections(
        same, two, torch.tensor([[0, 1]]), T(meta), iou_threshold=0.5, **options
    )
    assert count.item() == 2


def test_yolo_head_objectness_multiplies_the_class_scores() -> None:
    meta = letterbox_meta(64, 64, 64)
    # Two anchors (cx, cy, w, h, objectness, class 0, class 1), anchors last.
    head = torch.tensor([[[10, 40], [10, 40], [4, 4], [4, 4], [0.5, 1.0], [0.9, 0.1], [0.2, 0.6]]])
    boxes, scores, labels, count = yolo_detections(
        head, T(meta), score_threshold=0.3, max_detections=3, objectness=True
    )
    assert count.item() == 2 and labels[0, :2].tolist() == [1, 0]
    torch.testing.assert_close(scores[0, :2], torch.tensor([0.6, 0.45]))
    torch.testing.assert_close(boxes[0, 0], torch.tensor([38.0, 38, 42, 42]))


def test_l2_normalize() -> None:
    (e,) = l2_normalize(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    torch.testing.assert_close(e[0], torch.tensor([0.6, 0.8]))
    assert torch.isfinite(e).all() and e.dtype == torch.float32


def test_flat_float32_keeps_the_values() -> None:
    (e,) = flat_float32(torch.arange(6, dtype=torch.float16).reshape(1, 2, 3))
    assert e.dtype == torch.float32 and e.tolist() == [[0, 1, 2, 3, 4, 5]]


# --- on the GPU -----------------------------------------------------------------------------------


def same_answers(name: str, cpu: tuple[torch.Tensor, ...], gpu: tuple[torch.Tensor, ...]) -> None:
    for c, g in zip(cpu, gpu, strict=True):
        assert g.device.type == "cuda" and (g.dtype, g.shape) == (c.dtype, c.shape), name
        if name in WITHIN_ULP | {"sigmoid_masks"} and c.dtype == torch.float32:
            np.testing.assert_array_max_ulp(g.cpu().numpy(), c.numpy(), maxulp=1)
        else:
            assert torch.equal(g.cpu(), c), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("seed", range(6))
def test_every_function_answers_the_same_on_cuda(seed: int) -> None:
    """Inputs on CUDA with META left on the CPU (as the preprocessing hands it over): answers
    on CUDA, the CPU's."""
    cases, meta = random_cases(seed)
    for name, args, options in cases:
        cpu = FUNCTIONS[name](*on("cpu", args), **options)
        gpu_args = [
            T(a) if a is meta else T(a).cuda() if isinstance(a, np.ndarray) else a for a in args
        ]
        same_answers(name, cpu, FUNCTIONS[name](*gpu_args, **options))


@pytest.mark.parametrize("count", [-1, -9, 0, 3, 9])
def test_a_count_selects_candidates_as_a_slice_does(count: int) -> None:
    """A detector's count past its candidates, or negative, as NumPy's ``[:count]`` took it."""
    cases, _ = random_cases(1)
    (args,) = [args for name, args, _ in cases if name == "detections"]
    boxes, scores, labels, _, meta, _, _ = args
    counts = np.full((len(boxes), 1), min(count, scores.shape[1] + 2), np.int32)
    args = (boxes, scores, labels, counts, meta, 0.1, 8)
    for got, expected in zip(
        detections(*on("cpu", args)), reference("detections", *args), strict=True
    ):
        np.testing.assert_array_equal(got.numpy(), expected)
    options = {
        "score_threshold": 0.1,
        "max_detections": 8,
        "box_format": "xyxy",
        "iou_threshold": 0.5,
        "class_agnostic": False,
    }
    args = (boxes, scores, labels, meta, counts)
    got = box_detections(*on("cpu", args), **options)
    for g, e in zip(got, reference("box_detections", *args, **options), strict=True):
        np.testing.assert_array_equal(g.numpy(), e)
