from __future__ import annotations

import struct

import pytest
from cvserve.preprocess.sniff import sniff, strip_padding
from cvserve.preprocess.spec import PreprocessError
from cvserve.preprocess.synthetic import synthetic_image


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "bmp"])
def test_header_gives_format_and_size(fmt: str) -> None:
    header = sniff(synthetic_image(123, 45, fmt=fmt))
    assert (header.format, header.width, header.height) == (fmt, 123, 45)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty input"),
        (b"hello, this is a text file\n", "not a recognised image"),
        (b"GIF89a" + b"\x00" * 20, "unsupported format: GIF"),
    ],
)
def test_bad_bytes_are_refused_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(PreprocessError, match=reason):
        sniff(data)


def test_truncated_jpeg_is_refused() -> None:
    jpeg = synthetic_image(320, 240)
    with pytest.raises(PreprocessError, match="truncated JPEG"):
        sniff(jpeg[: len(jpeg) // 2])


def test_truncated_png_is_refused() -> None:
    png = synthetic_image(320, 240, fmt="png")
    with pytest.raises(PreprocessError, match="truncated PNG"):
        sniff(png[: len(png) // 2])


def test_decompression_bomb_is_refused_from_header_alone() -> None:
    # A PNG header claiming 100000 x 100000 pixels, with no pixel data behind it.
    png = synthetic_image(8, 8, fmt="png")
    bomb = png[:16] + struct.pack(">II", 100_000, 100_000) + png[24:]
    with pytest.raises(PreprocessError, match="exceeds the limit"):
        sniff(bomb, max_pixels=50_000_000)


def test_zero_padding_is_stripped() -> None:
    jpeg = synthetic_image(32, 32)
    assert strip_padding(jpeg + b"\x00" * 100) == jpeg
    assert sniff(strip_padding(jpeg + b"\x00" * 7)).width == 32
