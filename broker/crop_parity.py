"""How far a crop backend's crops lie from OpenCV's, on the cases that tell encoders apart.

The cases are small colour images with an EXIF orientation (a JPEG, a PNG and a WebP: the last
two are decoded on the CPU by every backend, so only the crop encode differs) and a grey JPEG
(no chroma); the boxes cut inside, across and past the upright image. `mean_abs_diffs` is what
the tests hold to `CROP_PARITY_BOUND` and what the GPU check reports per case.
"""

from __future__ import annotations

import numpy as np

from cvserve.broker.crops import cut_crops
from cvserve.preprocess.synthetic import colour_case

CROP_PARITY_CASES: tuple[str, ...] = ("exif6_jpeg", "exif8_png", "exif3_webp", "grey_jpeg")
CROP_PARITY_SIZE = (96, 64)  # stored width, height
CROP_PARITY_BOXES = np.array([[5, 7, 40, 50], [30, 2, 64, 90], [0, 0, 1000, 1000]], np.float32)
CROP_PARITY_SCORES = np.array([0.9, 0.8, 0.7], np.float32)
# Mean |Δ| (0-255 levels) between two encoders' crops of the same pixels: JPEG noise.
CROP_PARITY_BOUND = 3.0


def mean_abs_diffs(case: str, backend: str) -> list[float]:
    """Per crop of ``case``: mean |Δ| between ``backend``'s crop and OpenCV's, both decoded by
    OpenCV; ``ValueError`` if the two cut different boxes."""
    import cv2

    image = colour_case(case, *CROP_PARITY_SIZE, seed=3)
    args = (CROP_PARITY_BOXES, CROP_PARITY_SCORES, 0.5, 16)
    want = cut_crops(image, *args, backend="opencv")
    got = cut_crops(image, *args, backend=backend)
    if [c.crop for c in got] != [c.crop for c in want]:
        raise ValueError(f"{backend} cut {[c.crop for c in got]}, opencv {[c.crop for c in want]}")
    diffs = []
    for a, b in zip(got, want, strict=True):
        pa, pb = (cv2.imdecode(np.frombuffer(c.jpeg, np.uint8), cv2.IMREAD_COLOR) for c in (a, b))
        if pa.shape != pb.shape:
            raise ValueError(f"{backend} crop {a.crop} decodes to {pa.shape}, opencv's {pb.shape}")
        diffs.append(float(np.abs(pa.astype(int) - pb.astype(int)).mean()))
    return diffs
