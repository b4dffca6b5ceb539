"""The reference itself against PIL, DALI and torch, and the pixel fix-ups against PIL."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from nvidia.dali import fn, pipeline_def, types
from PIL import Image, ImageOps

from cvserve.preprocess.pixels import orient, to_8bit
from cvserve.preprocess.reference import resize
from cvserve.preprocess.resample import banded_resize
from cvserve.preprocess.synthetic import synthetic_rgb
from cvserve.preprocess.torchvision_backend import orient_chw

SIZES = [((300, 200), (171, 256)), ((97, 131), (240, 177)), ((1000, 700), (91, 64))]


@pytest.mark.parametrize(("size_in", "size_out"), SIZES)
def test_reference_resize_is_pils_bilinear_inside_the_image(size_in, size_out) -> None:
    rgb = synthetic_rgb(*size_in, seed=1)
    pil = np.asarray(Image.fromarray(rgb).resize(size_out, Image.BILINEAR), dtype=np.float64)
    ours = resize(rgb, size_out[1], size_out[0], antialias=True)
    # PIL rounds to 8 bits in fixed point; at the borders it renormalises where the spec clamps.
    assert np.abs(ours - pil)[1:-1, 1:-1].max() <= 1.0


@pytest.mark.parametrize(("size_in", "size_out"), SIZES)
def test_reference_resize_is_dalis_linear_antialiased_resize(size_in, size_out) -> None:
    rgb = synthetic_rgb(*size_in, seed=1)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def dali_resize():
        image = fn.external_source(name="image", layout="HWC")
        return fn.resize(image, size=size_out[::-1], antialias=True, dtype=types.FLOAT)

    pipe = dali_resize()
    pipe.build()
    pipe.feed_input("image", [rgb])
    (out,) = pipe.run()
    ours = resize(rgb, size_out[1], size_out[0], antialias=True)
    np.testing.assert_allclose(out.as_array()[0], ours, atol=0.01)  # 8-bit levels; DALI: float32


def test_reference_without_antialias_is_plain_bilinear() -> None:
    rgb = synthetic_rgb(300, 200, seed=2)
    ours = resize(rgb, 64, 90, antialias=False)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].double()
    plain = torch.nn.functional.interpolate(image, (64, 90), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours, plain[0].permute(1, 2, 0).numpy(), atol=1e-9)


@pytest.mark.parametrize("size", [(90, 64), (20, 300)])
def test_banded_resize_equals_the_dense_reference(size) -> None:
    rgb = synthetic_rgb(130, 101, seed=3)
    np.testing.assert_allclose(
        banded_resize(rgb, size[1], size[0], True), resize(rgb, size[1], size[0], True), atol=1e-3
    )


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pil_exif_transpose(orientation: int) -> None:
    rgb = synthetic_rgb(7, 5, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG", exif=exif.tobytes())
    with Image.open(buffer) as image:
        upright = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    np.testing.assert_array_equal(orient(rgb, orientation), upright)
    chw = orient_chw(torch.from_numpy(rgb).permute(2, 0, 1), orientation)
    np.testing.assert_array_equal(chw.permute(1, 2, 0).numpy(), upright)


def test_16_bit_samples_round_half_up_to_8_bits() -> None:
    v = np.arange(65536, dtype=np.uint16)
    expected = np.floor(v / 257 + 0.5)
    np.testing.assert_array_equal(to_8bit(v), expected)


def test_the_gpu_jpeg_chroma_bound_applies_to_jpegs_only() -> None:
    # torchvision's CUDA JPEG decode upsamples chroma otherwise (mean up to 0.034 measured on an
    # H200): its JPEGs keep their own bound, every other image the contract.
    from cvserve.preprocess.parity import PARITY_MAX, failures
    from cvserve.preprocess.preprocessor import Preprocessed

    meta = np.zeros(6, np.float32)
    expected = Preprocessed(np.zeros((3, 4, 4), np.float32), meta)
    off = Preprocessed(np.full((3, 4, 4), 0.03, np.float32), meta)  # over the contract's mean
    names = ["rgb_jpeg@8x8", "rgb_png@8x8"]
    both = [off, off], [expected, expected]
    assert failures(*both, names) == [
        "rgb_jpeg@8x8: mean 0.0300 max 0.030 meta equal True",
        "rgb_png@8x8: mean 0.0300 max 0.030 meta equal True",
    ]
    assert failures(*both, names, gpu_jpeg_chroma=True) == [
        "rgb_png@8x8: mean 0.0300 max 0.030 meta equal True"
    ]
    far = Preprocessed(np.full((3, 4, 4), 2 * PARITY_MAX, np.float32), meta)
    assert failures([far], [expected], names[:1], gpu_jpeg_chroma=True)  # still bounded
