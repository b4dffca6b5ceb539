"""The tensors that pass between stages, by name, and how encoded images travel as ``IMAGE``.

``IMAGE``: encoded image bytes, uint8, one image per batch row, zero-padded to the longest
(`pad_images`; decoders ignore the tail). ``PIXELS``: the preprocessed tensor. ``META``: float32
[`META_LENGTH`] per image, `preprocess.geometry.META_FIELDS`, back to original pixels. The rest
are the DNN and postprocess tensors of the shipped pipelines; ``RAW_<name>`` is a DNN output that
postprocessing turns into result ``<name>``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cvserve.preprocess.geometry import META_FIELDS

IMAGE = "IMAGE"
PIXELS = "PIXELS"
META = "META"
META_LENGTH = len(META_FIELDS)

LOGITS = "LOGITS"
LABELS = "LABELS"
SCORES = "SCORES"
BOXES = "BOXES"
COUNT = "COUNT"
MASK = "MASK"
DEPTH = "DEPTH"
SIZE = "SIZE"
EMBEDDING = "EMBEDDING"
RAW = "RAW_"


def pad_images(images: Sequence[bytes]) -> np.ndarray:
    """(N, L) uint8: each image's bytes, zero-padded to the longest (decoders ignore the tail)."""
    if not images:
        raise ValueError("no images")
    length = max(1, *(len(image) for image in images))
    batch = np.zeros((len(images), length), dtype=np.uint8)
    for row, image in enumerate(images):
        batch[row, : len(image)] = np.frombuffer(image, dtype=np.uint8)
    return batch
