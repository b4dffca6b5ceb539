"""Recognise an encoded image from its bytes and read its header, before decoding.

This is where bad input is refused with a reason: empty, unknown or unsupported format (HEIC and
AVIF named), truncated JPEG/PNG/WebP/BMP, and decompression bombs (header dimensions above a pixel
limit). A JPEG ends at its end-of-image marker: what cameras append after it (motion-photo video,
maker trailers) is not the image and is cut off (`ImageHeader.length`); a JPEG is truncated only
when its data ends before that marker.
The header also gives the EXIF orientation and the PNG bit depth the backends need. A JPEG cut
inside its scan whose end marker was put back passes here and decodes with a grey tail in every
backend (libjpeg's behaviour); corrupt data the decoder refuses fails that image alone.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import numpy as np

from cvserve.preprocess.spec import DEFAULT_MAX_PIXELS, SUPPORTED_FORMATS, PreprocessError

# Formats recognised but not decoded by cvserve.
_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)
# JPEG start-of-frame markers carrying the image size (all SOFn except DHT/JPG/DAC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# ISO-BMFF brands (the ``ftyp`` box at byte 4) of image formats cvserve does not decode.
_UNSUPPORTED_BRANDS: dict[bytes, str] = {
    **dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"), "HEIC"),
    **dict.fromkeys((b"avif", b"avis"), "AVIF"),
    **dict.fromkeys((b"mif1", b"msf1"), "HEIF"),
}
# In entropy-coded data a 0xFF is a marker unless stuffed (FF00), a restart (FFD0-D7) or fill.
_SCAN_MARKER = re.compile(rb"\xff(?![\x00\xd0-\xd7\xff])")
_EXIF_ORIENTATION_TAG = 0x0112
_BMP_MIN_HEADER = 26


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: format, stored size in pixels, EXIF orientation (1..8, 1 = upright),
    bits per channel sample, colour channels stored (JPEG: 1 grey, 3 YCbCr, 4 CMYK), and the bytes
    the image itself takes (0: all of them; a JPEG's trailer after its end-of-image is not)."""

    format: str
    width: int
    height: int
    orientation: int = 1
    bit_depth: int = 8
    channels: int = 3
    length: int = 0

    def image_bytes(self, data: bytes) -> bytes:
        """``data`` without what follows the image (a camera's trailer)."""
        return data[: self.length] if self.length else data

    @property
    def upright_size(self) -> tuple[int, int]:
        """(height, width) after applying the EXIF orientation (5..8 swap the axes)."""
        return (self.width, self.height) if self.orientation >= 5 else (self.height, self.width)


def strip_padding(data: bytes) -> bytes:
    """Drop the trailing zero bytes a client adds to batch images of different lengths.

    WebP and BMP may legitimately end in zero bytes, so their length comes from their header.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        end = struct.unpack("<I", data[4:8])[0] + 8
        return data[:end] if len(data) >= end else data
    if data[:2] == b"BM" and len(data) >= 6:
        end = struct.unpack("<I", data[2:6])[0]
        if end >= _BMP_MIN_HEADER and len(data) >= end:
            return data[:end]
    return data.rstrip(b"\x00")


def unpadded(image: bytes | np.ndarray) -> bytes:
    """`strip_padding` of an image given as bytes or as a uint8 row of a padded batch, with
    one copy of the image at most (the padding found by scanning back from the row's end)."""
    if isinstance(image, bytes):
        return strip_padding(image)
    row = np.asarray(image, np.uint8).reshape(-1)
    head = row[:12].tobytes()
    if head[:4] == b"RIFF" or head[:2] == b"BM":  # their length comes from their header
        return strip_padding(row.tobytes())
    return row[: _data_end(row)].tobytes()


def _data_end(row: np.ndarray) -> int:
    """One past the last non-zero byte of ``row`` (0 if none), scanning back from its end in
    doubling blocks: the padding is read, the image bytes before it mostly not."""
    end, block = len(row), 4096
    while end > 0:
        start = max(0, end - block)
        kept = row[start:end].tobytes().rstrip(b"\x00")  # a block's copy: faster than nonzero
        if kept:
            return start + len(kept)
        end, block = start, block * 2
    return 0


def sniff(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Collection[str] = SUPPORTED_FORMATS,
) -> ImageHeader:
    """Return the header of an encoded image, or raise `PreprocessError` saying why not.

    Refuses formats not in ``formats`` and images of more than ``max_pixels`` pixels.
    """
    if len(data) == 0:
        raise PreprocessError("empty input (0 bytes)")
    header = _read_header(data)
    if header.format not in formats:
        raise PreprocessError(
            f"unsupported format: {header.format.upper()} (accepted: {', '.join(formats)})"
        )
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
    if data[4:8] == b"ftyp" and data[8:12] in _UNSUPPORTED_BRANDS:
        raise PreprocessError(f"unsupported format: {_UNSUPPORTED_BRANDS[data[8:12]]}")
    raise PreprocessError(f"not a recognised image (first bytes {data[:8]!r}, {len(data):,} bytes)")


def exif_orientation(tiff: bytes) -> int:
    """The orientation tag (1..8) of an EXIF (TIFF-structured) block; 1 if absent or unreadable."""
    if tiff.startswith(b"Exif\x00\x00"):
        tiff = tiff[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind = struct.unpack(order + "HH", tiff[entry : entry + 4])
        if tag == _EXIF_ORIENTATION_TAG and kind == 3:  # SHORT
            (value,) = struct.unpack(order + "H", tiff[entry + 8 : entry + 10])
            return value if 1 <= value <= 8 else 1
    return 1


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(position, marker, length) of each segment of the JPEG in ``data``, in order, up to its
    end-of-image marker (length 0); each scan's entropy-coded data is skipped. Ends early where
    the data does (a truncated file)."""
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            raise PreprocessError(f"corrupt JPEG: bad marker at byte {pos:,}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            yield pos, marker, 0
            return
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if pos + 4 > len(data):
            return
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        yield pos, marker, length
        pos += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            found = _SCAN_MARKER.search(data, pos)
            if found is None:
                return
            pos = found.start()


def _jpeg_end(data: bytes) -> int | None:
    """Where the JPEG in ``data`` ends (just past its end-of-image marker); None if the data
    ends first."""
    for pos, marker, _ in _jpeg_segments(data):
        if marker == 0xD9:
            return pos + 2
    return None


def _jpeg_header(data: bytes) -> ImageHeader:
    # Most files end with their end-of-image marker; only the others are walked to find it.
    end = len(data) if data.endswith(b"\xff\xd9") else _jpeg_end(data)
    if end is None:
        raise PreprocessError(
            f"truncated JPEG: the data ends before its end-of-image marker ({len(data):,} bytes)"
        )
    orientation = 1
    for pos, marker, length in _jpeg_segments(data):
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            orientation = exif_orientation(data[pos + 10 : pos + 2 + length])
        if marker in _JPEG_SOF:
            if pos + 10 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            depth, channels = data[pos + 4], data[pos + 9]
            return ImageHeader("jpeg", width, height, orientation, depth, channels, length=end)
        if marker in (0xDA, 0xD9):  # a scan (or the end) before any frame header
            break
    raise PreprocessError("corrupt JPEG: no frame header (SOF) found")


def _png_header(data: bytes) -> ImageHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise PreprocessError(f"truncated PNG: header incomplete ({len(data):,} bytes)")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    if b"IEND" not in data[-12:]:
        raise PreprocessError(f"truncated PNG: no IEND chunk in {len(data):,} bytes")
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour_type, 3)
    orientation = 1
    pos = 8
    while pos + 8 <= len(data):  # chunk headers only: cheap even for large images
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"eXIf":
            orientation = exif_orientation(data[pos + 8 : pos + 8 + length])
            break
        pos += 12 + length
    return ImageHeader("png", width, height, orientation, bit_depth, channels)


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
        return ImageHeader("webp", width, height, _webp_orientation(data, riff_size + 8))
    raise PreprocessError(f"corrupt WebP: unknown chunk {chunk!r}")


def _webp_orientation(data: bytes, end: int) -> int:
    pos = 12
    while pos + 8 <= end:
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if fourcc == b"EXIF":
            return exif_orientation(data[pos + 8 : pos + 8 + size])
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    return 1


def _bmp_header(data: bytes) -> ImageHeader:
    if len(data) < _BMP_MIN_HEADER:
        raise PreprocessError(f"truncated BMP: header incomplete ({len(data):,} bytes)")
    (file_size,) = struct.unpack("<I", data[2:6])
    if len(data) < file_size:
        raise PreprocessError(f"truncated BMP: {len(data):,} of {file_size:,} bytes")
    width, height = struct.unpack("<ii", data[18:26])
    return ImageHeader("bmp", abs(width), abs(height))
