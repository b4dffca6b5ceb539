"""Served answers of the same pipeline on two devices, compared by what each task's answer means.

`served_parity` serves a shipped pipeline built for each device (one local Triton per device,
one after the other), sends both the same images one request each, and compares every answer
with the first device's by the rule of its output (`RULES`):

- classify (``LABELS``): the share of images with the same top-1 class — all of them at fp32,
  at least `TOP1_SHARE_REDUCED` at reduced precision;
- detect (``BOXES``): every box of the reference matched by one of the same class at IoU ≥
  `BOX_IOU`, and as many boxes;
- segment (``MASK``): at least `MASK_SHARE` of mask pixels equal;
- identify (``EMBEDDING``): cosine similarity ≥ `COSINE` per image;
- depth (``DEPTH``): mean |Δ| at most `DEPTH_REL` of the reference's range.

``python -m cvserve.profiling.bench.gpu_check`` runs it CPU vs GPU; the tests run the same code
CPU vs CPU (the device a parameter).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cvserve.preprocess.tensors import BOXES, COUNT, DEPTH, EMBEDDING, LABELS, MASK

TOP1_SHARE_REDUCED = 0.95
BOX_IOU = 0.9
MASK_SHARE = 0.99
COSINE = 0.999
DEPTH_REL = 0.01

Answers = dict[str, np.ndarray]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` (M, 4) against ``b`` (K, 4), x1 y1 x2 y2 → (M, K)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def top1(reference: Answers, got: Answers, reduced: bool) -> tuple[float, bool]:
    share = float(np.mean(reference[LABELS][:, 0] == got[LABELS][:, 0]))
    return share, share >= (TOP1_SHARE_REDUCED if reduced else 1.0)


def boxes(reference: Answers, got: Answers, reduced: bool) -> tuple[float, bool]:
    """The share of reference boxes matched (same class, IoU ≥ `BOX_IOU`); counts must agree."""
    matched = total = 0
    same_counts = True
    labels = reference.get("LABELS")
    for i in range(len(reference[BOXES])):
        n, m = int(reference[COUNT][i].item()), int(got[COUNT][i].item())
        same_counts &= n == m
        if n == 0:
            continue
        iou = _iou(reference[BOXES][i, :n], got[BOXES][i, :m]) if m else np.zeros((n, 0))
        if labels is not None and m:
            iou = np.where(labels[i, :n, None] == got["LABELS"][i, None, :m], iou, 0.0)
        matched += int(np.sum(iou.max(axis=1, initial=0.0) >= BOX_IOU))
        total += n
    share = matched / total if total else 1.0
    return share, same_counts and share == 1.0


def masks(reference: Answers, got: Answers, reduced: bool) -> tuple[float, bool]:
    if reference[MASK].shape != got[MASK].shape:
        return 0.0, False
    share = float(np.mean(reference[MASK] == got[MASK]))
    return share, share >= MASK_SHARE


def cosine(reference: Answers, got: Answers, reduced: bool) -> tuple[float, bool]:
    a = reference[EMBEDDING].astype(np.float64)
    b = got[EMBEDDING].astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    worst = float(np.min(np.sum(a * b, axis=1) / norms))
    return worst, worst >= COSINE


def depth(reference: Answers, got: Answers, reduced: bool) -> tuple[float, bool]:
    if reference[DEPTH].shape != got[DEPTH].shape:
        return float("inf"), False
    a, b = reference[DEPTH].astype(np.float64), got[DEPTH].astype(np.float64)
    span = max(float(np.ptp(a)), 1e-12)
    rel = float(np.mean(np.abs(a - b))) / span
    return rel, rel <= DEPTH_REL


Rule = Callable[[Answers, Answers, bool], tuple[float, bool]]
# The output a pipeline's answer is read from → (what is measured, the rule); the first a
# pipeline has decides (a detector also answers LABELS).
RULES: dict[str, tuple[str, Rule]] = {
    BOXES: ("boxes matched at IoU 0.9 (share)", boxes),
    MASK: ("mask pixels equal (share)", masks),
    EMBEDDING: ("cosine (worst image)", cosine),
    DEPTH: ("mean |diff| / range", depth),
    LABELS: ("top-1 same (share)", top1),
}


def rule_for(outputs: Sequence[str]) -> tuple[str, str, Rule]:
    """The output a pipeline with ``outputs`` is compared by, what is measured, and the rule."""
    for name, (what, rule) in RULES.items():
        if name in outputs:
            return name, what, rule
    raise KeyError(f"no comparison rule for outputs {list(outputs)}")


def compare(reference: list[Answers], got: list[Answers], reduced: bool) -> dict[str, Any]:
    """Per-image answers (one request each) of two devices, compared by the pipeline's rule;
    answers concatenated over images first (masks of different sizes compared image by
    image)."""
    name, what, rule = rule_for(list(reference[0]))
    values = [rule(r, g, reduced) for r, g in zip(reference, got, strict=True)]
    worst = min(v for v, _ in values) if name != DEPTH else max(v for v, _ in values)
    return {"output": name, "measure": what, "worst": worst, "ok": all(ok for _, ok in values)}


def served_answers(
    specs: Sequence[Any], images: Sequence[bytes], url: str | None = None, timeout_s: float = 600.0
) -> dict[str, list[Answers]]:
    """Each of ``specs``' answers to ``images``, one request per image, by pipeline name: on the
    Triton at ``url`` (gRPC host:port), or on one local Triton serving them all for the
    occasion."""
    from cvserve.models.client import PipelineClient
    from cvserve.models.serving import serve_locally

    if url is None:
        with serve_locally(list(specs), timeout_s=timeout_s) as server:
            return served_answers(specs, images, server.grpc_url)
    answers = {}
    for spec in specs:
        with PipelineClient(url, spec) as client:
            answers[spec.name] = [client.infer([image]) for image in images]
    return answers


def served_parity(
    servers: dict[str, Sequence[Any]], images: Sequence[bytes]
) -> dict[str, dict[str, Any]]:
    """``servers``: a label (a device, a precision) → the pipelines one Triton serves for it,
    the same pipelines under the same names for every label (the first label is the reference,
    at fp32). Each server runs in turn; returns, per pipeline, the comparison of every other
    label's answers with the first's (`compare`, with the reduced-precision bound where that
    label's pipeline allows it)."""
    answers = {label: served_answers(specs, images) for label, specs in servers.items()}
    (first, reference), *others = answers.items()
    by_name = {label: {s.name: s for s in specs} for label, specs in servers.items()}
    return {
        name: {
            f"{label} vs {first}": compare(
                reference[name], got[name], reduced_precision(by_name[label][name])
            )
            for label, got in others
            if name in got
        }
        for name in reference
    }


def reduced_precision(spec: Any) -> bool:
    """Whether ``spec``'s DNN may run below fp32."""
    from cvserve.models.params import DnnParams
    from cvserve.pipelines.variants import unfused

    params = unfused(spec).stage_by_role("inference").params
    return isinstance(params, DnnParams) and params.precision != "fp32"
