"""Pixel fix-ups the backends share so every decoder ends at the spec's upright 8-bit RGB."""

from __future__ import annotations

import numpy as np

# EXIF orientation (1..8) → (transpose, flip rows, flip columns), applied in that order: the
# transforms of PIL's ``exif_transpose``.
ORIENTATION_STEPS: dict[int, tuple[bool, bool, bool]] = {
    1: (False, False, False),
    2: (False, False, True),
    3: (False, True, True),
    4: (False, True, False),
    5: (True, False, False),
    6: (True, False, True),
    7: (True, True, True),
    8: (True, True, False),
}


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """An (H, W, ...) image turned upright per its EXIF ``orientation``; a view, no copy."""
    transpose, flip_rows, flip_cols = ORIENTATION_STEPS.get(orientation, ORIENTATION_STEPS[1])
    if transpose:
        image = np.swapaxes(image, 0, 1)
    if flip_rows:
        image = image[::-1]
    if flip_cols:
        image = image[:, ::-1]
    return image


def to_8bit(image: np.ndarray) -> np.ndarray:
    """16-bit samples → uint8 ``round(v / 257)`` (rounded half up), as DALI's decoder does."""
    return ((image.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)
