"""Postprocessing per task, as torch functions on the tensors' own device (CPU or CUDA), so that
on a GPU server the network's outputs stay on the GPU and only the answers cross to the host
(the Triton adapter only wires them).

Every function takes torch tensors and returns a tuple of tensors on its first input's device;
``META`` may come from the CPU while the network's outputs are on CUDA (it is moved). Results go
back to original image coordinates through the preprocessing stage's ``META`` (N, 6) float32 =
(orig_h, orig_w, scale_y, scale_x, pad_top, pad_left): a model-input point (x, y) is
``((x - pad_left) / scale_x, (y - pad_top) / scale_y)`` in the original image. Masks and depth
maps are resampled with OpenCV's ``warpAffine`` arithmetic (`to_original_map`), so that answers
on the CPU are those the NumPy/OpenCV postprocessing gave.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.nn.functional import pad

from cvserve.models.detection_heads import BoxFormat, batched_nms, nms, to_xyxy, yolo_candidates

MASK_PAD = 255  # mask value past an image's own size in a batch of different sizes

Interpolation = Literal["nearest", "linear"]
# cv::warpAffine's fixed point: source coordinates in 1/1024 pixel (AB_BITS), bilinear weights
# in 1/32 steps (INTER_BITS).
_AB_BITS = 10
_INTER_BITS = 5


def top_k(logits: Tensor, k: int, softmax: bool = True) -> tuple[Tensor, Tensor]:
    """Softmax over the last axis (unless the model already gives scores: ``softmax=False``),
    then the ``k`` best classes.

    ``logits`` (N, C) float → labels (N, k) int64 and scores (N, k) float32, best first (ties:
    the lower class first); computed in float64.
    """
    x = logits.to(torch.float64).reshape(len(logits), -1)
    probabilities = x
    if softmax:
        probabilities = torch.exp(x - x.amax(dim=-1, keepdim=True))
        probabilities = probabilities / probabilities.sum(dim=-1, keepdim=True)
    k = min(k, x.shape[-1])
    # Stable sort on -p (not topk): ties keep the lower class index first.
    labels = torch.sort(-probabilities, dim=-1, stable=True).indices[:, :k]
    scores = probabilities.gather(-1, labels)
    return labels, scores.to(torch.float32)


def _sizes(meta: Tensor, device: torch.device) -> Tensor:
    """(N, 2) int32 (orig_h, orig_w), rounded half to even."""
    return torch.round(meta[:, :2].to(device)).to(torch.int32)


def _source_coordinates(
    out_h: int, out_w: int, meta_row: Sequence[float], bits: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Source row (out_h,) and column (out_w,) of every output pixel, int64 in 1/2**bits pixel,
    rounded as cv::warpAffine (WARP_INVERSE_MAP) rounds them for a matrix without rotation:
    per row cvRound((M11*y + M12)*1024), per column cvRound(M00*x*1024) added to the row's
    cvRound(M02*1024), each plus half a step, shifted down from 1/1024 pixel."""
    _, _, scale_y, scale_x, pad_top, pad_left = meta_row
    # Original pixel centre (x + 0.5) lands at (x + 0.5) * scale + pad in model-input coordinates.
    m02 = 0.5 * scale_x + pad_left - 0.5
    m12 = 0.5 * scale_y + pad_top - 0.5
    one = 1 << _AB_BITS
    half_step = one >> (bits + 1)
    shift = _AB_BITS - bits
    x = torch.arange(out_w, dtype=torch.float64, device=device)
    y = torch.arange(out_h, dtype=torch.float64, device=device)
    # torch.round and round() round half to even, as cvRound.
    per_column = torch.round(x * scale_x * one).to(torch.int64)
    columns = (per_column + round(m02 * one) + half_step) >> shift
    rows = (torch.round((y * scale_y + m12) * one).to(torch.int64) + half_step) >> shift
    return rows, columns


def to_original_map(
    plane: Tensor, meta_row: Sequence[float], interpolation: Interpolation
) -> Tensor:
    """Resample an (h, w) plane at model-input resolution onto the original image grid: (H, W)
    = ``meta_row``'s (orig_h, orig_w) rounded, on the plane's device, as ``cv2.warpAffine`` with
    ``WARP_INVERSE_MAP`` and ``BORDER_REPLICATE`` computes it. ``nearest`` keeps the plane's
    dtype; ``linear`` takes float32: weights in 1/32 steps, summed in float32 in OpenCV's order.
    ``meta_row``: the image's six META values as Python floats."""
    orig_h, orig_w = meta_row[0], meta_row[1]
    h, w = plane.shape
    bits = 0 if interpolation == "nearest" else _INTER_BITS
    rows, columns = _source_coordinates(round(orig_h), round(orig_w), meta_row, bits, plane.device)
    # Columns first: picking whole rows afterwards is a copy per row (masks grow, mostly).
    if interpolation == "nearest":
        return plane.index_select(1, columns.clamp(0, w - 1)).index_select(0, rows.clamp(0, h - 1))
    steps = float(1 << _INTER_BITS)
    low_y, low_x = rows >> _INTER_BITS, columns >> _INTER_BITS
    wy1 = (rows & ((1 << _INTER_BITS) - 1)).to(torch.float32) / steps
    wx1 = (columns & ((1 << _INTER_BITS) - 1)).to(torch.float32) / steps
    wy0, wx0 = 1 - wy1, 1 - wx1
    left = plane.index_select(1, low_x.clamp(0, w - 1))
    right = plane.index_select(1, (low_x + 1).clamp(0, w - 1))
    top, bottom = low_y.clamp(0, h - 1), (low_y + 1).clamp(0, h - 1)
    # OpenCV's weight table holds the products (exact in float32); cv::remap sums the four
    # terms left to right in float32.
    out = left.index_select(0, top) * (wy0[:, None] * wx0)
    out = out + right.index_select(0, top) * (wy0[:, None] * wx1)
    out = out + left.index_select(0, bottom) * (wy1[:, None] * wx0)
    return out + right.index_select(0, bottom) * (wy1[:, None] * wx1)


def _original_maps(
    planes: Tensor, meta: Tensor, interpolation: Interpolation, fill: float, dtype: torch.dtype
) -> Tensor:
    """Each image's (h, w) plane at its original size, (N, H, W) of ``dtype`` padded with
    ``fill`` to the largest, on the planes' device."""
    rows = meta.detach().to("cpu", torch.float64).tolist()
    maps = [to_original_map(p, r, interpolation) for p, r in zip(planes, rows, strict=True)]
    height = max(m.shape[0] for m in maps)
    width = max(m.shape[1] for m in maps)
    out = torch.full((len(maps), height, width), fill, dtype=dtype, device=planes.device)
    for i, plane in enumerate(maps):
        out[i, : plane.shape[0], : plane.shape[1]] = plane
    return out


def segmentation_masks(logits: Tensor, meta: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel argmax class at the original size.

    ``logits`` (N, C, h, w) → mask (N, H, W) uint8 (``MASK_PAD`` past each image's own size when
    sizes differ) and size (N, 2) int32 = (orig_h, orig_w).
    """
    # max(dim).indices: argmax's answer (the first of equal maxima), faster along dim 1 on a CPU.
    classes = logits.max(dim=1).indices.to(torch.uint8)
    masks = _original_maps(classes, meta, "nearest", MASK_PAD, torch.uint8)
    return masks, _sizes(meta, logits.device)


def depth_maps(depth: Tensor, meta: Tensor) -> tuple[Tensor, Tensor]:
    """Relative depth at the original size: ``depth`` (N, 1, h, w) → (N, H, W) float16 (0 past
    each image's own size; resampled bilinearly in float32) and size (N, 2) int32."""
    planes = depth[:, 0].to(torch.float32)
    return _original_maps(planes, meta, "linear", 0.0, torch.float16), _sizes(meta, depth.device)


def ranked_above(scores: Tensor, threshold: float, limit: int | None = None) -> Tensor:
    """int64 indices of ``scores`` (1-D) at least ``threshold``, best first (ties keep their
    order), at most ``limit``; on the scores' device."""
    s = scores.to(torch.float64).reshape(-1)
    order = torch.sort(-s, stable=True).indices
    return order[s[order] >= threshold][:limit]


def _detection_outputs(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    count: Tensor,
    meta: Tensor,
    max_detections: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Candidates (N, D ≤ ``max_detections``) per image, best first, of which the first
    ``count`` (N,) are detections: boxes (N, D, 4) xyxy in model-input pixels, scores, labels →
    the outputs of `detections`, boxes mapped to original pixels (float64, then float32) and
    clipped to the image, zeros past each image's count."""
    n, d = scores.shape
    device = scores.device
    m = meta.to(device=device, dtype=torch.float64)[:, None, :]  # (N, 1, 6)
    b = boxes.to(torch.float64)
    mapped = torch.empty_like(b)
    # x1, x2 by (orig_w, scale_x, pad_left); y1, y2 by (orig_h, scale_y, pad_top).
    for first, (size, scale, offset) in enumerate(((1, 3, 5), (0, 2, 4))):
        moved = (b[..., first::2] - m[..., offset : offset + 1]) / m[..., scale : scale + 1]
        mapped[..., first::2] = torch.minimum(moved.clamp_min(0), m[..., size : size + 1])
    found = torch.arange(d, device=device)[None, :] < count.to(device).reshape(n, 1)
    more = max_detections - d
    return (
        pad(torch.where(found[..., None], mapped, 0.0).to(torch.float32), (0, 0, 0, more)),
        pad(torch.where(found, scores, 0.0).to(torch.float32), (0, more)),
        pad(torch.where(found, labels.to(torch.int64), 0), (0, more)),
        count.to(device=device, dtype=torch.int32).reshape(n, 1),
    )


def _pack_detections(
    found: list[tuple[Tensor, Tensor, Tensor]],
    meta: Tensor,
    max_detections: int,
    device: torch.device,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per image (boxes (M, 4) xyxy in model-input pixels, scores (M,), labels (M,)), best first
    → the outputs of `detections` (at most ``max_detections`` per image)."""
    n = len(found)
    boxes = torch.zeros((n, max_detections, 4), dtype=torch.float64, device=device)
    scores = torch.zeros((n, max_detections), dtype=torch.float32, device=device)
    labels = torch.zeros((n, max_detections), dtype=torch.int64, device=device)
    counts = [min(len(s), max_detections) for _, s, _ in found]
    for i, ((b, s, c), m) in enumerate(zip(found, counts, strict=True)):
        boxes[i, :m], scores[i, :m], labels[i, :m] = b[:m], s[:m], c[:m]
    count = torch.tensor(counts, dtype=torch.int64, device=device)
    return _detection_outputs(boxes, scores, labels, count, meta, max_detections)


def _valid_counts(count: Tensor, n: int, candidates: int) -> Tensor:
    """(N,) int64: an image's candidates below this index are valid, as the slice ``[:count]``
    takes them (count truncated toward zero; negative: counted from the end)."""
    c = count.reshape(n).to(torch.int64)
    return torch.where(c < 0, c + candidates, c)


def detections(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    count: Tensor,
    meta: Tensor,
    score_threshold: float,
    max_detections: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Detections above ``score_threshold``, best first, at most ``max_detections``, with boxes
    (x1, y1, x2, y2) mapped to original pixels and clipped to the image.

    Inputs: boxes (N, K, 4), scores (N, K), labels (N, K), count (N, 1), meta (N, 6). Outputs are
    zero-padded to ``max_detections``: boxes float32, scores float32, labels int64, count (N, 1)
    int32. The whole batch at once, without a sync with the host.
    """
    device = boxes.device
    n, k = scores.shape[0], scores.shape[1]
    s = scores.to(device=device, dtype=torch.float32)
    valid = _valid_counts(count.to(device), n, k)
    inside = torch.arange(k, device=device)[None, :] < valid[:, None]
    # Candidates past the count sort after every valid one; ties keep their order.
    key = torch.where(inside, -s.to(torch.float64), torch.inf)
    order = torch.sort(key, dim=1, stable=True).indices[:, :max_detections]
    ranked = s.gather(1, order)
    # The kept ones lead each row: valid, at least the threshold, best first.
    kept = (ranked >= score_threshold) & inside.gather(1, order)
    return _detection_outputs(
        boxes.to(device).gather(1, order[..., None].expand(-1, -1, boxes.shape[-1])),
        ranked,
        labels.to(device).gather(1, order),
        kept.sum(dim=1),
        meta,
        max_detections,
    )


def _suppressed(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    score_threshold: float,
    iou_threshold: float | None,
    class_agnostic: bool,
) -> tuple[Tensor, Tensor, Tensor]:
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
    return boxes, scores.to(torch.float32), labels.to(torch.int64)


def box_detections(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    meta: Tensor,
    count: Tensor | None = None,
    *,
    score_threshold: float,
    max_detections: int,
    box_format: BoxFormat = "xyxy",
    normalized: bool = False,
    input_size: tuple[int, int] | None = None,
    iou_threshold: float | None = None,
    class_agnostic: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A detector that writes boxes, scores and classes apart: boxes (N, K, 4) in
    ``box_format`` (``normalized``: fractions of ``input_size`` (H, W)), scores (N, K), labels
    (N, K), optionally count (N, 1) valid per image → the outputs of `detections`, with NMS when
    ``iou_threshold`` is set."""
    device = boxes.device
    n = len(boxes)
    valid = [scores.shape[1]] * n if count is None else [int(v) for v in count.reshape(-1).tolist()]
    found = []
    for i in range(n):
        xyxy = to_xyxy(boxes[i, : valid[i]], box_format, normalized, input_size)
        found.append(
            _suppressed(
                xyxy,
                scores[i, : valid[i]].to(device=device, dtype=torch.float64),
                labels[i, : valid[i]].to(device=device, dtype=torch.int64),
                score_threshold,
                iou_threshold,
                class_agnostic,
            )
        )
    return _pack_detections(found, meta, max_detections, device)


def yolo_detections(
    head: Tensor,
    meta: Tensor,
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
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A raw YOLO-style head (N, 4 + C, A) (``anchors_last``; else (N, A, 4 + C)): each anchor's
    best class, scores at least ``score_threshold``, NMS at ``iou_threshold`` → the outputs of
    `detections`."""
    found = []
    for one in head:
        raw, scores, labels = yolo_candidates(one, anchors_last=anchors_last, objectness=objectness)
        xyxy = to_xyxy(raw, box_format, normalized, input_size)
        found.append(
            _suppressed(xyxy, scores, labels, score_threshold, iou_threshold, class_agnostic)
        )
    return _pack_detections(found, meta, max_detections, head.device)


def sigmoid_masks(logits: Tensor, meta: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """A one-channel map (N, 1, h, w) or (N, h, w) of logits → mask (N, H, W) uint8, 1 where
    sigmoid(logit) > ``threshold`` (in float64), at the original size (``MASK_PAD`` past each
    image's own size), and size (N, 2) int32."""
    x = logits.to(torch.float64)
    x = x[:, 0] if x.ndim == 4 else x
    binary = (1.0 / (1.0 + torch.exp(-x)) > threshold).to(torch.uint8)
    masks = _original_maps(binary, meta, "nearest", MASK_PAD, torch.uint8)
    return masks, _sizes(meta, logits.device)


def l2_normalize(embeddings: Tensor) -> tuple[Tensor]:
    """(N, D) → (N, D) float32 with unit L2 norm per row."""
    e = embeddings.to(torch.float32).reshape(len(embeddings), -1)
    # The norm summed in float64, rounded once: the same on every device, whatever the order of
    # the sum (a float32 sum differs by an ulp between orders).
    norm = torch.linalg.vector_norm(e.to(torch.float64), dim=1, keepdim=True).to(torch.float32)
    return (e / norm.clamp_min(1e-12),)


def flat_float32(embeddings: Tensor) -> tuple[Tensor]:
    """(N, ...) → (N, D) float32, values as the model gave them."""
    return (embeddings.to(torch.float32).reshape(len(embeddings), -1),)


# name -> function; a postprocess stage names its function and passes the rest as keywords.
FUNCTIONS: dict[str, Callable[..., tuple[Tensor, ...]]] = {
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
