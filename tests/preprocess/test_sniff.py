from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image
from preprocess_cases import black_top_bmp, bomb

from cvserve.preprocess.sniff import exif_orientation, sniff, strip_padding, unpadded
from cvserve.preprocess.spec import PreprocessError
from cvserve.preprocess.synthetic import COLOUR_CASES, colour_case, synthetic_image


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "bmp"])
def test_header_gives_format_and_size(fmt: str) -> None:
    header = sniff(synthetic_image(123, 45, fmt=fmt))
    assert (header.format, header.width, header.height) == (fmt, 123, 45)


@pytest.mark.parametrize("case", list(COLOUR_CASES))
def test_header_orientation_bit_depth_and_channels_agree_with_pil(case: str) -> None:
    data = colour_case(case, 40, 30)
    header = sniff(data)
    with Image.open(io.BytesIO(data)) as image:
        assert header.orientation == image.getexif().get(0x0112, 1)
        upright = (image.height, image.width)
        if header.orientation >= 5:
            upright = upright[::-1]
    assert header.upright_size == upright
    assert header.bit_depth == (16 if "16" in case else 8)
    if case.endswith("_jpeg"):
        assert header.channels == {"grey": 1, "cmyk": 4}.get(case.split("_")[0], 3)


def test_exif_orientation_of_garbage_is_upright() -> None:
    assert exif_orientation(b"") == 1
    assert exif_orientation(b"MM\x00*\xff\xff\xff\xff") == 1  # IFD offset beyond the block


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


def test_formats_the_spec_does_not_accept_are_refused() -> None:
    with pytest.raises(PreprocessError, match="unsupported format: BMP"):
        sniff(synthetic_image(8, 8, fmt="bmp"), formats=("jpeg", "png"))


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "bmp"])
def test_truncated_images_are_refused(fmt: str) -> None:
    data = synthetic_image(320, 240, fmt=fmt)
    name = {"jpeg": "JPEG", "png": "PNG", "webp": "WebP", "bmp": "BMP"}[fmt]
    with pytest.raises(PreprocessError, match=f"truncated {name}"):
        sniff(data[: len(data) // 2])


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "bmp"])
def test_decompression_bomb_is_refused_from_header_alone(fmt: str) -> None:
    data = bomb(fmt)
    assert len(data) < 10_000  # nothing behind the header could be that large
    with pytest.raises(PreprocessError, match="3,600,000,000 pixels exceeds the limit of 50,000"):
        sniff(data, max_pixels=50_000_000)


def test_zero_padding_is_stripped() -> None:
    jpeg = synthetic_image(32, 32)
    assert strip_padding(jpeg + b"\x00" * 100) == jpeg
    assert sniff(strip_padding(jpeg + b"\x00" * 7)).width == 32


def test_padding_strip_keeps_bmp_and_webp_that_end_in_zero_bytes() -> None:
    bmp = black_top_bmp()
    assert bmp.endswith(b"\x00" * 8)
    assert strip_padding(bmp + b"\x00" * 50) == bmp
    # A WebP whose last (padded, odd-sized) chunk ends in zeros.
    webp = synthetic_image(16, 16, fmt="webp")
    extra = b"XTRA" + struct.pack("<I", 3) + b"\x00\x00\x00\x00"
    webp = b"RIFF" + struct.pack("<I", len(webp) - 8 + len(extra)) + webp[8:] + extra
    assert strip_padding(webp + b"\x00" * 21) == webp
    assert sniff(strip_padding(webp + b"\x00" * 21)).width == 16


def _row(image: bytes, padding: int) -> np.ndarray:
    return np.frombuffer(image + b"\x00" * padding, np.uint8)


@pytest.mark.parametrize("padding", [0, 1, 4095, 4096, 4097, 70_000])
@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "bmp"])
def test_a_padded_row_is_unpadded_as_its_bytes_are(fmt: str, padding: int) -> None:
    image = black_top_bmp() if fmt == "bmp" else synthetic_image(40, 30, fmt=fmt)
    got = unpadded(_row(image, padding))
    assert got == strip_padding(image + b"\x00" * padding) and isinstance(got, bytes)
    assert unpadded(image + b"\x00" * padding) == got


def test_an_all_zero_row_is_empty() -> None:
    assert unpadded(np.zeros(10_000, np.uint8)) == b""
    with pytest.raises(PreprocessError, match="empty input"):
        sniff(unpadded(np.zeros(10_000, np.uint8)))
