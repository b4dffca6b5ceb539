"""Reduced-resolution JPEG decoding (backend ``opencv-reduced``): the factor chosen, the contract
against the float64 reference on large images, META exactly as with a full decode."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from cvserve.preprocess.backends import make_preprocessor
from cvserve.preprocess.opencv import REDUCED_FLAGS
from cvserve.preprocess.parity import failures
from cvserve.preprocess.reduced_decode import jpeg_reduction
from cvserve.preprocess.sniff import ImageHeader, sniff
from cvserve.preprocess.spec import PreprocessSpec
from cvserve.preprocess.synthetic import colour_case, synthetic_image

SHORTER_CROP = PreprocessSpec()  # shorter side 256, centre crop 224
LETTERBOX = PreprocessSpec(resize_mode="letterbox", crop=(160, 224))
FIXED = PreprocessSpec(resize_mode="fixed", crop=(96, 128), dtype="float16", layout="HWC")


def jpeg_header(width: int, height: int, orientation: int = 1, bit_depth: int = 8) -> ImageHeader:
    return ImageHeader("jpeg", width, height, orientation, bit_depth)


@pytest.mark.parametrize(
    ("header", "spec", "expected"),
    [
        (jpeg_header(3840, 2160), SHORTER_CROP, 4),  # 8.4x: 1/4 leaves 2.1x
        (jpeg_header(1920, 1080), SHORTER_CROP, 2),  # 4.2x
        (jpeg_header(640, 480), SHORTER_CROP, 1),  # 1.9x: nothing to spare
        (jpeg_header(8000, 6000), SHORTER_CROP, 8),  # 23x
        (jpeg_header(1920, 1080), LETTERBOX, 4),  # 8.6x
        (jpeg_header(4000, 3000), FIXED, 8),  # 31x on both axes
        (jpeg_header(2160, 3840, orientation=6), SHORTER_CROP, 4),  # stored sideways
        (jpeg_header(3842, 2162), SHORTER_CROP, 2),  # 1/4 would not divide the sides
        (jpeg_header(3841, 2161), SHORTER_CROP, 1),  # odd: no factor divides
        # At the boundary (`MIN_REDUCED_SCALE` = 2): 8x leaves exactly 2x at 1/4, 7.9x does not.
        (jpeg_header(1024, 1024), PreprocessSpec(resize_shorter=128, crop=(128, 128)), 4),
        (jpeg_header(1024, 1024), PreprocessSpec(resize_shorter=129, crop=(128, 128)), 2),
        (jpeg_header(3840, 2160, bit_depth=12), SHORTER_CROP, 1),
        (ImageHeader("png", 3840, 2160), SHORTER_CROP, 1),
        (jpeg_header(3840, 2160), dataclasses.replace(SHORTER_CROP, antialias=False), 1),
    ],
)
def test_the_largest_reduction_keeping_the_minimum_scale_is_chosen(header, spec, expected):
    assert jpeg_reduction(header, spec) == expected


class DecodeSpy:
    """Records the ``cv2.imdecode`` flags each call used."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, refuse_reduced: bool = False) -> None:
        self.flags: list[int] = []
        self.decode = cv2.imdecode
        self.refuse_reduced = refuse_reduced
        monkeypatch.setattr(cv2, "imdecode", self)

    def __call__(self, data: np.ndarray, flags: int) -> np.ndarray | None:
        self.flags.append(flags)
        if self.refuse_reduced and flags in REDUCED_FLAGS.values():
            return None
        return self.decode(data, flags)


# name → (encoded image, spec, reduction expected)
LARGE_CASES = {
    "3840x2160 → 224": (lambda: synthetic_image(3840, 2160, seed=1), SHORTER_CROP, 4),
    "1920x1080 → 224": (lambda: synthetic_image(1920, 1080, seed=2), SHORTER_CROP, 2),
    "1920x1080 letterbox": (lambda: synthetic_image(1920, 1080, seed=3), LETTERBOX, 4),
    "4000x3000 fixed fp16": (lambda: synthetic_image(4000, 3000, seed=4), FIXED, 8),
    "exif6 stored 1280x2160": (lambda: colour_case("exif6_jpeg", 1280, 2160, seed=5), LETTERBOX, 4),
    "cmyk 1920x1080": (lambda: colour_case("cmyk_jpeg", 1920, 1080, seed=6), SHORTER_CROP, 2),
    "grey 1600x1200": (lambda: colour_case("grey_jpeg", 1600, 1200, seed=7), LETTERBOX, 2),
}


@pytest.mark.parametrize("case", list(LARGE_CASES))
def test_reduced_decode_keeps_the_contract_and_meta(case: str, monkeypatch) -> None:
    make, spec, expected = LARGE_CASES[case]
    data = make()
    reference = make_preprocessor(spec, "reference")([data])
    full = make_preprocessor(spec, "opencv")([data])
    spy = DecodeSpy(monkeypatch)
    got = make_preprocessor(spec, "opencv-reduced")([data])
    assert spy.flags == [REDUCED_FLAGS[expected]]
    assert failures(got, reference, [case]) == []
    assert got[0].pixels.shape == spec.output_shape and got[0].pixels.dtype == spec.dtype
    np.testing.assert_array_equal(got[0].meta, full[0].meta)  # the original image's, exactly


def test_no_reduction_allowed_gives_the_full_decode_bit_for_bit(monkeypatch) -> None:
    data = [synthetic_image(640, 480, seed=8), synthetic_image(3841, 2161, seed=9)]
    full = make_preprocessor(SHORTER_CROP, "opencv")(data)
    spy = DecodeSpy(monkeypatch)
    got = make_preprocessor(SHORTER_CROP, "opencv-reduced")(data)
    assert spy.flags == [cv2.IMREAD_COLOR] * 2
    for a, b in zip(got, full, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        np.testing.assert_array_equal(a.meta, b.meta)


@pytest.mark.parametrize("fmt", ["png", "webp", "bmp"])
def test_other_formats_take_the_full_decode(fmt: str, monkeypatch) -> None:
    data = [synthetic_image(1920, 1080, seed=10, fmt=fmt)]
    full = make_preprocessor(SHORTER_CROP, "opencv")(data)
    spy = DecodeSpy(monkeypatch)
    (got,) = make_preprocessor(SHORTER_CROP, "opencv-reduced")(data)
    assert not set(spy.flags) & set(REDUCED_FLAGS.values())
    np.testing.assert_array_equal(got.pixels, full[0].pixels)
    np.testing.assert_array_equal(got.meta, full[0].meta)


def test_a_reduced_decode_that_fails_falls_back_to_the_full_one(monkeypatch) -> None:
    data = [synthetic_image(1920, 1080, seed=11)]
    assert jpeg_reduction(sniff(data[0]), SHORTER_CROP) == 2
    full = make_preprocessor(SHORTER_CROP, "opencv")(data)
    spy = DecodeSpy(monkeypatch, refuse_reduced=True)
    (got,) = make_preprocessor(SHORTER_CROP, "opencv-reduced")(data)
    assert spy.flags == [REDUCED_FLAGS[2], cv2.IMREAD_COLOR]
    np.testing.assert_array_equal(got.pixels, full[0].pixels)


def test_the_option_is_off_by_default() -> None:
    from cvserve.preprocess.opencv import OpenCVPreprocessor

    assert not OpenCVPreprocessor(SHORTER_CROP).reduced_decode
    assert make_preprocessor(SHORTER_CROP, "opencv-reduced", threads=2).reduced_decode
