"""Inputs the preprocessing tests share: bad images, bombs, edge-case files, the backends."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from cvserve.preprocess.synthetic import colour_case, synthetic_image, synthetic_rgb

CPU_BACKENDS = ("dali", "opencv", "opencv-reduced", "torchvision")


def bomb(fmt: str, width: int = 60_000, height: int = 60_000) -> bytes:
    """A small file of ``fmt`` whose header claims ``width`` x ``height`` pixels."""
    data = bytearray(synthetic_image(16, 16, fmt=fmt))
    if fmt == "jpeg":
        sof = next(
            data.find(bytes([0xFF, m])) for m in (0xC0, 0xC2) if data.find(bytes([0xFF, m])) > 0
        )
        data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    elif fmt == "png":
        data[16:24] = struct.pack(">II", width, height)
    elif fmt == "bmp":
        data[18:26] = struct.pack("<ii", width, height)
    else:  # webp: rewrite as an extended (VP8X) header with a canvas size
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + canvas
        body = b"WEBP" + chunk + bytes(data[12:])
        return b"RIFF" + struct.pack("<I", len(body)) + body
    return bytes(data)


def black_top_bmp(width: int = 40, height: int = 30) -> bytes:
    """A BMP ending in zero bytes (rows are stored bottom-up: the black top row comes last)."""
    rgb = synthetic_rgb(width, height, seed=3)
    rgb[0] = 0
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "BMP")
    return buffer.getvalue()


def bad_inputs() -> dict[str, tuple[bytes, str]]:
    """Bad images and the words their `PreprocessError` must contain."""
    good = synthetic_image(200, 150, seed=5)
    return {
        "zero bytes": (b"", "empty input"),
        "random bytes": (
            bytes(np.random.default_rng(1).integers(1, 255, 3000, dtype=np.uint8)),
            "not a recognised image",
        ),
        "truncated JPEG": (good[: len(good) // 2], "truncated JPEG"),
        "wrong magic": (b"\x00" + good[1:], "not a recognised image"),
        "GIF": (b"GIF89a" + b"\x01" * 40, "unsupported format: GIF"),
        "TIFF": (b"II*\x00" + b"\x01" * 40, "unsupported format: TIFF"),
        "JPEG bomb": (bomb("jpeg"), "exceeds the limit"),
        "PNG bomb": (bomb("png"), "exceeds the limit"),
        "no scan data": (good[: good.index(b"\xff\xda")] + b"\xff\xd9", "corrupt JPEG"),
        "truncated PNG": (colour_case("rgb_png", 64, 48)[:-200], "truncated PNG"),
    }
