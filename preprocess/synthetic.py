"""Generated test images (no data set needed): smooth gradients, shapes and mild noise, so that
their encoded sizes resemble photographs more than pure noise or flat colour would."""

from __future__ import annotations

import cv2
import numpy as np

_ENCODE_EXT = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp"}


def synthetic_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image, the same for the same arguments."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 6.28)
        image[..., c] = 127 + 100 * np.sin(fx * 6.28 * x / width + fy * 6.28 * y / height + phase)
    for _ in range(12):
        colour = tuple(float(v) for v in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        radius = int(
            rng.integers(max(2, min(width, height) // 20), max(3, min(width, height) // 4))
        )
        if rng.random() < 0.5:
            cv2.circle(image, (cx, cy), radius, colour, thickness=-1)
        else:
            cv2.rectangle(
                image,
                (cx - radius, cy - radius // 2),
                (cx + radius, cy + radius // 2),
                colour,
                thickness=-1,
            )
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an RGB image as ``fmt`` (jpeg, png, webp, bmp)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, buffer = cv2.imencode(_ENCODE_EXT[fmt], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"could not encode {fmt}")
    return buffer.tobytes()


def synthetic_image(width: int, height: int, seed: int = 0, fmt: str = "jpeg") -> bytes:
    """Encoded bytes of `synthetic_rgb`."""
    return encode(synthetic_rgb(width, height, seed), fmt)
