from __future__ import annotations

import numpy as np
import torch
from cvserve.models.postprocess import top_k


def test_top_k_matches_torch_softmax_topk() -> None:
    logits = np.random.default_rng(0).normal(size=(4, 1000)).astype(np.float32)
    labels, scores = top_k(logits, 5)
    expected = torch.softmax(torch.from_numpy(logits), dim=-1).topk(5)
    np.testing.assert_array_equal(labels, expected.indices.numpy())
    np.testing.assert_allclose(scores, expected.values.numpy(), rtol=1e-5)
    assert labels.dtype == np.int64 and scores.dtype == np.float32
