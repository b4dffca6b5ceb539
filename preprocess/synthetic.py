"""Generated test images (no data set needed): smooth gradients, shapes and mild noise, so that
their encoded sizes resemble photographs more than pure noise or flat colour would."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

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


# Every colour and container case the spec accepts: (format, what makes it special).
COLOUR_CASES: dict[str, str] = {
    "rgb_jpeg": "YCbCr 4:2:0 JPEG",
    "grey_jpeg": "1-channel JPEG → 3 channels",
    "cmyk_jpeg": "Adobe CMYK JPEG",
    "exif6_jpeg": "JPEG, EXIF orientation 6 (rotate 90° clockwise)",
    "rgb_png": "8-bit RGB PNG",
    "grey_png": "8-bit grey PNG",
    "rgba_png": "RGBA PNG (alpha dropped)",
    "palette_png": "palette PNG",
    "grey16_png": "16-bit grey PNG",
    "rgb16_png": "16-bit RGB PNG",
    "exif8_png": "PNG, eXIf orientation 8 (rotate 90° counter-clockwise)",
    "rgb_webp": "lossy WebP (VP8)",
    "rgba_webp": "lossy WebP with alpha (VP8X)",
    "lossless_webp": "lossless WebP (VP8L)",
    "exif3_webp": "lossy WebP, EXIF orientation 3 (rotate 180°)",
    "rgb_bmp": "24-bit BMP",
}


def _pil_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def colour_case(case: str, width: int, height: int, seed: int = 0) -> bytes:
    """Encoded bytes of `synthetic_rgb` as colour case ``case`` (see `COLOUR_CASES`); the stored
    image is ``width`` x ``height`` (EXIF cases are upright after their rotation)."""
    rgb = synthetic_rgb(width, height, seed)
    image = Image.fromarray(rgb)
    alpha = Image.fromarray(
        np.linspace(0, 255, width * height).reshape(height, width).astype(np.uint8)
    )
    # 16 bits: the 8-bit image in the high byte, a seeded pattern in the low byte.
    low = np.random.default_rng(seed).integers(0, 256, rgb.shape, dtype=np.uint16)
    rgb16 = rgb.astype(np.uint16) * 256 + low
    match case:
        case "rgb_jpeg":
            return _pil_bytes(image, "JPEG", quality=90)
        case "grey_jpeg":
            return _pil_bytes(image.convert("L"), "JPEG", quality=90)
        case "cmyk_jpeg":
            return _pil_bytes(image.convert("CMYK"), "JPEG", quality=90)
        case "exif6_jpeg":
            return _pil_bytes(image, "JPEG", quality=90, exif=_exif(6))
        case "rgb_png":
            return _pil_bytes(image, "PNG")
        case "grey_png":
            return _pil_bytes(image.convert("L"), "PNG")
        case "rgba_png":
            return _pil_bytes(Image.merge("RGBA", (*image.split(), alpha)), "PNG")
        case "palette_png":
            return _pil_bytes(image.convert("P"), "PNG")
        case "grey16_png":
            return cv2.imencode(".png", rgb16[..., 0])[1].tobytes()
        case "rgb16_png":
            return cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1]))[1].tobytes()
        case "exif8_png":
            return _pil_bytes(image, "PNG", exif=_exif(8))
        case "rgb_webp":
            return _pil_bytes(image, "WEBP", quality=90)
        case "rgba_webp":
            return _pil_bytes(Image.merge("RGBA", (*image.split(), alpha)), "WEBP", quality=90)
        case "lossless_webp":
            return _pil_bytes(image, "WEBP", lossless=True)
        case "exif3_webp":
            return _pil_bytes(image, "WEBP", quality=90, exif=_exif(3))
        case "rgb_bmp":
            return _pil_bytes(image, "BMP")
    raise KeyError(f"unknown colour case {case!r}; choose from {sorted(COLOUR_CASES)}")
