"""What is particular to DALI: META computed in the graph, errors, the GPU graph without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.dali_graph import define_pipeline, gpu_count
from cvserve.preprocess.geometry import meta, placement
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec
from cvserve.preprocess.synthetic import colour_case, synthetic_image

SPECS = {
    "shorter_crop": PreprocessSpec(resize_shorter=40, crop=(32, 32)),
    "letterbox": PreprocessSpec(resize_mode="letterbox", crop=(30, 44)),
    "fixed": PreprocessSpec(resize_mode="fixed", crop=(24, 40)),
}


@pytest.fixture(scope="module")
def dali() -> DaliPreprocessor:
    return DaliPreprocessor(PreprocessSpec(), max_batch_size=4, num_threads=1)


@pytest.mark.parametrize("mode", list(SPECS))
def test_meta_computed_in_the_graph_equals_the_geometry(mode: str) -> None:
    """The graph evaluates `placement` on DALI nodes (int64 arithmetic): same numbers as Python."""
    spec = SPECS[mode]
    rng = np.random.default_rng(len(mode))
    sizes = [
        (1, 1),
        (3, 200),
        (200, 3),
        *(tuple(int(v) for v in rng.integers(1, 300, 2)) for _ in range(40)),
    ]
    images = [synthetic_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    images.append(colour_case("exif6_jpeg", 90, 40))  # upright 40 x 90
    sizes.append((40, 90))
    results = DaliPreprocessor(spec, max_batch_size=16, num_threads=2)(images)
    for (w, h), result in zip(sizes, results, strict=True):
        np.testing.assert_array_equal(result.meta, meta(placement(h, w, spec)), err_msg=f"{w}x{h}")


def test_one_bad_image_fails_only_itself(dali: DaliPreprocessor) -> None:
    good = synthetic_image(200, 150)
    # Headers intact (passes the header check) but no scan data: only the decoder can tell.
    no_scan = good[: good.index(b"\xff\xda")] + b"\xff\xd9"
    results = dali([good, b"", no_scan, good, no_scan, b"not an image"])
    kinds = [type(r).__name__ for r in results]
    assert kinds == [
        "Preprocessed",
        *["PreprocessError"] * 2,
        "Preprocessed",
        *["PreprocessError"] * 2,
    ]
    assert "empty" in results[1].reason
    assert results[2].index == 2 and "corrupt JPEG" in results[2].reason
    np.testing.assert_array_equal(results[0].pixels, results[3].pixels)


def test_batches_larger_than_the_pipeline_are_split(dali: DaliPreprocessor) -> None:
    images = [synthetic_image(64 + i, 64, seed=i) for i in range(9)]
    batch = dali.run_batch(images)
    assert batch.shape == (9, *dali.spec.output_shape)
    np.testing.assert_array_equal(batch[5], dali.run_batch([images[5]])[0])


def test_run_batch_raises_the_bad_images_error(dali: DaliPreprocessor) -> None:
    with pytest.raises(PreprocessError, match="image 1: empty"):
        dali.run_batch([synthetic_image(64, 64), b""])


def test_lossless_webp_with_exif_is_refused_by_dali_alone(dali: DaliPreprocessor) -> None:
    """A known limitation of DALI 2.4's WebP parser (VP8X + VP8L): refused, never a crash."""
    import io

    from PIL import Image

    from cvserve.preprocess.opencv import OpenCVPreprocessor

    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.open(io.BytesIO(colour_case("rgb_png", 40, 30))).save(
        buffer, "WEBP", lossless=True, exif=exif.tobytes()
    )
    (result,) = dali([buffer.getvalue()])
    assert isinstance(result, PreprocessError) and "corrupt WEBP" in result.reason
    (other,) = OpenCVPreprocessor(dali.spec)([buffer.getvalue()])
    assert other.meta[:2].tolist() == [40, 30]  # upright


def test_gpu_graph_is_defined_and_serialised_without_a_gpu() -> None:
    pipe = define_pipeline(PreprocessSpec(resize_mode="letterbox"), 8, 2, "gpu", device_id=None)
    serialized = pipe.serialize()
    assert b"mixed" in serialized and b"hw_decoder_load" in serialized


@pytest.mark.skipif(gpu_count() > 0, reason="a GPU is present")
def test_gpu_preprocessor_says_why_it_cannot_run_without_a_gpu() -> None:
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        DaliPreprocessor(PreprocessSpec(device="gpu"))


@pytest.mark.parametrize("spec_name", ["shorter_crop", "letterbox"])
def test_dali_is_the_spec_up_to_8_bit_rounding(spec_name, corpus, references) -> None:
    """DALI implements the spec's filter and borders exactly: it differs from the float64
    reference only by rounding the resized image to 8 bits (half a level, 0.5 / 57 normalised)."""
    from cvserve.preprocess.parity import PARITY_SPECS, parity

    got = DaliPreprocessor(PARITY_SPECS[spec_name], 8, 2)(list(corpus.values()))
    worst = max(parity(g, r).max for g, r in zip(got, references[spec_name], strict=True))
    assert worst < 0.011
