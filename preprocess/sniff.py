"""Recognise an encoded image from its bytes and read its size from the header, before decoding.

This is where bad input is refused with a reason: empty, unknown or unsupported format,
truncated JPEG/PNG, and decompression bombs (header dimensions above a pixel limit).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cvserve.preprocess.spec import DEFAULT_MAX_PIXELS, PreprocessError

# Formats recognised but not decoded by cvserve.
_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
# JPEG start-of-frame markers carrying the image size (all SOFn except DHT/JPG/DAC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: format and size in pixels."""

    format: str
    width: int
    height: int


def strip_padding(data: bytes) -> bytes:
    """Drop the trailing zero bytes a client adds to batch images of different lengths."""
    return data.rstrip(b"\x00")


def sniff(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Return the format and size of an encoded image, or raise `PreprocessError` saying why not."""
    if len(data) == 0:
        raise PreprocessError("empty input (0 bytes)")
    header = _read_header(data)
    if header.width <= 0 or header.height <= 0:
        raise PreprocessError(f"invalid {header.format} size {header.width}x{header.height}")
    if header.width * header.height > max_pixels:
        raise PreprocessError(
            f"{header.format} of {header.width}x{header.height} = "
            f"{header.width * header.height:,} pixels exceeds the limit of {max_pixels:,}"
        )
    return header


def _read_header(data: bytes) -> ImageHeader:
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_header(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_header(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_header(data)
    if data[:2] == b"BM":
        return _bmp_header(data)
    for magic, name in _UNSUPPORTED_MAGIC:
        if data.startswith(magic):
            raise PreprocessError(f"unsupported format: {name}")
    raise PreprocessError(f"not a recognised image (first bytes {data[:8]!r}, {len(data):,} bytes)")


def _jpeg_header(data: bytes) -> ImageHeader:
    if not data.endswith(b"\xff\xd9"):
        raise PreprocessError(f"truncated JPEG: no end-of-image marker in {len(data):,} bytes")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise PreprocessError(f"corrupt JPEG: bad marker at byte {pos:,}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return ImageHeader("jpeg", width, height)
        if marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    raise PreprocessError("corrupt JPEG: no frame header (SOF) found")


def _png_header(data: bytes) -> ImageHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise PreprocessError(f"truncated PNG: header incomplete ({len(data):,} bytes)")
    width, height = struct.unpack(">II", data[16:24])
    if b"IEND" not in data[-12:]:
        raise PreprocessError(f"truncated PNG: no IEND chunk in {len(data):,} bytes")
    return ImageHeader("png", width, height)


def _webp_header(data: bytes) -> ImageHeader:
    (riff_size,) = struct.unpack("<I", data[4:8])
    if len(data) < riff_size + 8 or len(data) < 30:
        raise PreprocessError(f"truncated WebP: {len(data):,} of {riff_size + 8:,} bytes")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageHeader("webp", width, height)
    raise PreprocessError(f"corrupt WebP: unknown chunk {chunk!r}")


def _bmp_header(data: bytes) -> ImageHeader:
    if len(data) < 26:
        raise PreprocessError(f"truncated BMP: header incomplete ({len(data):,} bytes)")
    (file_size,) = struct.unpack("<I", data[2:6])
    if len(data) < file_size:
        raise PreprocessError(f"truncated BMP: {len(data):,} of {file_size:,} bytes")
    width, height = struct.unpack("<ii", data[18:26])
    return ImageHeader("bmp", abs(width), abs(height))
