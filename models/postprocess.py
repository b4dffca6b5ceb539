"""Postprocessing per task, as plain NumPy functions (the Triton adapters only wire them)."""

from __future__ import annotations

import numpy as np


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
