"""The placement formula against an exact (Fraction) statement of the spec's rules, and META."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from cvserve.preprocess.geometry import (
    META_FIELDS,
    meta,
    placement,
    to_original,
    visible_window,
)
from cvserve.preprocess.spec import PreprocessSpec

SPECS = {
    "shorter_crop": PreprocessSpec(),
    "letterbox": PreprocessSpec(resize_mode="letterbox", crop=(320, 480)),
    "fixed": PreprocessSpec(resize_mode="fixed", crop=(96, 128)),
    "letterbox_top_left": PreprocessSpec(resize_mode="letterbox_top_left", crop=(320, 480)),
    "fit_height": PreprocessSpec(resize_mode="fit_height", crop=(32, 320)),
    "dynamic": PreprocessSpec(resize_mode="dynamic", crop=(640, 640), multiple_of=32),
}


def half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def oracle(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """(resized_h, resized_w, top, left) from the spec's rules, in exact arithmetic."""
    out_h, out_w = spec.output_size
    if spec.resize_mode == "fixed":
        rh, rw = out_h, out_w
    elif spec.resize_mode == "shorter_crop":
        scale = Fraction(spec.resize_shorter, min(h, w))
        rh, rw = half_up(h * scale), half_up(w * scale)
    elif spec.resize_mode == "dynamic":
        if h <= out_h and w <= out_w:
            return h, w, 0, 0
        scale = min(Fraction(out_h, h), Fraction(out_w, w))
        return max(1, half_up(h * scale)), max(1, half_up(w * scale)), 0, 0
    elif spec.resize_mode == "fit_height":
        # Height to out_h; the width keeps the aspect ratio, capped at out_w; top-left.
        return out_h, max(1, min(out_w, half_up(Fraction(w * out_h, h)))), 0, 0
    else:
        scale = min(Fraction(out_h, h), Fraction(out_w, w))
        rh, rw = max(1, half_up(h * scale)), max(1, half_up(w * scale))
        if spec.resize_mode == "letterbox_top_left":
            return rh, rw, 0, 0

    def offset(r: int, out: int) -> int:
        # A crop anchor (r - out) / 2 rounded half up; a pad (out - r) / 2 rounded down.
        return -half_up(Fraction(r - out, 2)) if r >= out else (out - r) // 2

    return rh, rw, offset(rh, out_h), offset(rw, out_w)


def sizes() -> list[tuple[int, int]]:
    rng = np.random.default_rng(0)
    edge = [(1, 1), (1, 5000), (5000, 1), (224, 224), (256, 373), (512, 513), (320, 480)]
    return edge + [tuple(int(v) for v in rng.integers(1, 5000, 2)) for _ in range(300)]


@pytest.mark.parametrize("mode", list(SPECS))
def test_placement_follows_the_rounding_rules(mode: str) -> None:
    spec = SPECS[mode]
    for h, w in sizes():
        p = placement(h, w, spec)
        assert (p.resized_h, p.resized_w, p.top, p.left) == oracle(h, w, spec), (h, w)


def test_crop_anchor_rounds_half_up_and_long_side_rounds_half_up() -> None:
    spec = PreprocessSpec()  # shorter side 256, crop 224
    # 373 wide at 256 high: anchor (373 - 224) / 2 = 74.5 → 75 (Python's round() gives 74).
    assert placement(256, 373, spec).left == -75
    # 513 x 512 → long side 513 * 256 / 512 = 256.5 → 257 (round() gives 256).
    assert placement(512, 513, spec).resized_w == 257


@pytest.mark.parametrize("mode", list(SPECS))
def test_meta_maps_the_resized_image_back_onto_the_original(mode: str) -> None:
    spec = SPECS[mode]
    for h, w in sizes()[:60]:
        p = placement(h, w, spec)
        m = meta(p)
        assert m.dtype == np.float32 and m.shape == (len(META_FIELDS),)
        corners = np.array([[p.left, p.top, p.left + p.resized_w, p.top + p.resized_h]])
        np.testing.assert_allclose(to_original(corners, m), [[0, 0, w, h]], atol=1e-3)


def test_to_original_inverts_the_forward_mapping() -> None:
    p = placement(480, 640, PreprocessSpec(resize_mode="letterbox", crop=(320, 320)))
    m = meta(p)
    boxes = np.array([[100.0, 50.0, 300.0, 250.0], [0.0, 0.0, 640.0, 480.0]])
    forward = boxes * np.array([m[3], m[2], m[3], m[2]]) + np.array([m[5], m[4], m[5], m[4]])
    np.testing.assert_allclose(to_original(forward, m), boxes, atol=1e-4)
    assert (m[4], m[5]) == ((320 - p.resized_h) // 2, 0)  # landscape: pads top and bottom


def test_fixed_pads_are_zero_and_shorter_crop_pads_are_minus_the_crop() -> None:
    fixed = meta(placement(200, 300, SPECS["fixed"]))
    assert fixed[4] == fixed[5] == 0
    crop = placement(200, 300, SPECS["shorter_crop"])
    assert crop.top == -(256 - 224) // 2 and crop.left < 0


@pytest.mark.parametrize("mode", list(SPECS))
def test_visible_window_stays_inside_both_images(mode: str) -> None:
    spec = SPECS[mode]
    for h, w in sizes()[:60]:
        p = placement(h, w, spec)
        out_h, out_w = p.out_h, p.out_w
        assert (out_h, out_w) == spec.output_size or spec.dynamic
        win = visible_window(p, spec)
        out = np.zeros((out_h, out_w))[win.out_rows, win.out_cols]
        src = np.zeros((p.resized_h, p.resized_w))[win.src_rows, win.src_cols]
        assert out.shape == src.shape
        if mode in ("shorter_crop", "fixed"):  # these fill the output; the others pad
            assert out.shape == (out_h, out_w)
        else:  # the padded modes show the whole resized image
            assert src.shape == (p.resized_h, p.resized_w)


def test_a_dynamic_output_is_the_resized_image_padded_up_to_the_multiple() -> None:
    spec = SPECS["dynamic"]
    for h, w in sizes():
        p = placement(h, w, spec)
        for resized, out in ((p.resized_h, p.out_h), (p.resized_w, p.out_w)):
            assert out % 32 == 0 and resized <= out < resized + 32
        assert max(p.resized_h, p.resized_w) <= 640
