"""Every CPU backend under one contract: the reference, bad input, ragged batches, memory."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from preprocess_cases import CPU_BACKENDS, bad_inputs, black_top_bmp, bomb

from cvserve.preprocess.backends import make_preprocessor
from cvserve.preprocess.geometry import to_original
from cvserve.preprocess.parity import PARITY_SPECS, failures
from cvserve.preprocess.preprocessor import Preprocessed, stack_results
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec
from cvserve.preprocess.synthetic import colour_case, encode, synthetic_image


@pytest.mark.parametrize("spec_name", list(PARITY_SPECS))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_matches_the_float64_reference(backend, spec_name, corpus, references) -> None:
    """Every colour case at several sizes: mean < 0.02, max < 0.5 normalised, META equal."""
    spec = PARITY_SPECS[spec_name]
    with make_preprocessor(spec, backend, max_batch_size=8, threads=2) as pre:
        got = pre(list(corpus.values()))
    assert failures(got, references[spec_name], list(corpus)) == []
    for result in got:
        # A dynamic spec's -1 sides are each image's own (`failures` compared them with the
        # reference's).
        shape = tuple(
            s if o == -1 else o for s, o in zip(result.pixels.shape, spec.output_shape, strict=True)
        )
        assert result.pixels.shape == shape
        assert result.pixels.dtype == np.dtype(spec.dtype)
        assert result.meta.dtype == np.float32


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bad_images_fail_alone_with_their_reason(backend: str) -> None:
    bad = bad_inputs()
    good = [synthetic_image(120, 90, seed=1), colour_case("rgb_png", 90, 120, seed=2)]
    batch = [good[0], *(data for data, _ in bad.values()), good[1]]
    with make_preprocessor(PreprocessSpec(), backend, max_batch_size=4, threads=2) as pre:
        results = pre(batch)
        alone = [pre([image])[0] for image in good]
    assert isinstance(results[0], Preprocessed) and isinstance(results[-1], Preprocessed)
    for position, (case, (_, reason)) in enumerate(bad.items(), start=1):
        error = results[position]
        assert isinstance(error, PreprocessError), case
        assert reason in error.reason and error.index == position, (case, error)
    for got, expected in zip((results[0], results[-1]), alone, strict=True):
        np.testing.assert_array_equal(got.pixels, expected.pixels)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bombs_are_refused_before_any_decoding(backend: str, monkeypatch) -> None:
    pre = make_preprocessor(PreprocessSpec(max_pixels=10_000), backend)

    def no_decoding(chunk):
        raise AssertionError(f"decoding reached for {[i.index for i in chunk]}")

    monkeypatch.setattr(pre, "_process", no_decoding)
    results = pre(
        [bomb(fmt) for fmt in ("jpeg", "png", "webp", "bmp")] + [synthetic_image(200, 100)]
    )
    assert all("exceeds the limit of 10,000" in r.reason for r in results)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ragged_zero_padded_batch_equals_images_one_by_one(backend: str) -> None:
    images = [
        synthetic_image(300, 200, seed=1),
        colour_case("rgb_png", 97, 131, seed=2),
        colour_case("lossless_webp", 640, 480, seed=3),
        black_top_bmp(),  # ends in zero bytes itself
        colour_case("exif6_jpeg", 200, 120, seed=4),
    ]
    padded = np.zeros((len(images), max(map(len, images)) + 13), np.uint8)
    for row, data in enumerate(images):
        padded[row, : len(data)] = np.frombuffer(data, np.uint8)
    with make_preprocessor(PreprocessSpec(), backend, max_batch_size=8, threads=2) as pre:
        batch = pre(list(padded))
        for data, got in zip(images, batch, strict=True):
            (alone,) = pre([data])
            np.testing.assert_array_equal(got.pixels, alone.pixels)
            np.testing.assert_array_equal(got.meta, alone.meta)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batches_are_split_by_count_and_decoded_pixels(backend: str) -> None:
    images = [synthetic_image(100 + 10 * i, 80, seed=i) for i in range(7)]
    budget = 3 * 130 * 80  # about three images' pixels
    spec = PreprocessSpec(resize_shorter=64, crop=(56, 56), max_batch_pixels=budget)
    pre = make_preprocessor(spec, backend, max_batch_size=2, threads=2)
    chunks = []
    process = pre._process

    def spy(chunk):
        chunks.append([item.pixels for item in chunk])
        return process(chunk)

    pre._process = spy
    batch = pre.run_batch(images)
    assert sum(map(len, chunks)) == len(images) and len(chunks) >= 4
    assert all(len(c) <= 2 and (sum(c) <= budget or len(c) == 1) for c in chunks)
    for i in (0, 6):
        np.testing.assert_array_equal(batch[i], pre.run_batch([images[i]])[0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    ("mode", "size", "box"),
    [
        ("letterbox", (640, 480), (100, 50, 300, 250)),
        ("letterbox", (400, 800), (40, 500, 360, 780)),
        ("shorter_crop", (300, 400), (60, 120, 250, 300)),
        ("fixed", (500, 300), (0, 0, 250, 150)),
    ],
)
def test_a_drawn_box_maps_back_through_meta(backend, mode, size, box) -> None:
    """The white rectangle found in the model input, mapped back with META, is the drawn one."""
    width, height = size
    rgb = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    rgb[y1:y2, x1:x2] = 255
    spec = PreprocessSpec(
        resize_mode=mode,
        resize_shorter=180,
        crop=(160, 160),
        mean=(0.0,) * 3,
        std=(255.0,) * 3,
        pad_value=(0.0,) * 3,
    )
    with make_preprocessor(spec, backend) as pre:
        (out,) = pre([encode(rgb, "png")])
    white = out.pixels[0] > 0.5  # the white area, at half intensity
    rows, cols = np.nonzero(white.any(axis=1))[0], np.nonzero(white.any(axis=0))[0]
    found = np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], np.float64)
    scale = float(out.meta[2]), float(out.meta[3])
    tolerance = np.array([1 / scale[1], 1 / scale[0]] * 2)  # one model-input pixel
    assert np.all(np.abs(to_original(found, out.meta)[0] - box) <= tolerance), (found, out.meta)


def test_thread_pool_and_plain_loop_agree(corpus) -> None:
    data = list(corpus.values())[:12]
    loop = make_preprocessor(PreprocessSpec(), "opencv", threads=1)(data)
    pool = make_preprocessor(PreprocessSpec(), "opencv", threads=3)(data)
    for a, b in zip(loop, pool, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_stack_results_names_every_bad_image_by_position() -> None:
    ok = Preprocessed(np.zeros((3, 2, 2), np.float32), np.zeros(6, np.float32))
    pixels, meta = stack_results([ok, ok])
    assert pixels.shape == (2, 3, 2, 2) and meta.shape == (2, 6)
    errors = [ok, PreprocessError("empty input", index=7), ok, PreprocessError("too big", 9)]
    with pytest.raises(PreprocessError, match=r"^image 1: empty input; image 3: too big$"):
        stack_results(errors)


def test_float16_and_hwc_are_the_float32_chw_result_converted(corpus) -> None:
    data = list(corpus.values())[:6]
    base = PreprocessSpec()
    chw = make_preprocessor(base, "opencv")(data)
    hwc16 = make_preprocessor(dataclasses.replace(base, layout="HWC", dtype="float16"), "opencv")(
        data
    )
    for a, b in zip(chw, hwc16, strict=True):
        np.testing.assert_array_equal(a.pixels.transpose(1, 2, 0).astype(np.float16), b.pixels)


def test_opencv_threads_setting_is_left_alone() -> None:
    before = cv2.getNumThreads()
    make_preprocessor(PreprocessSpec(), "opencv", threads=2)([synthetic_image(64, 64)])
    assert cv2.getNumThreads() == before


def test_batched_gpu_decode_path_keeps_the_contract_on_the_cpu(corpus, references) -> None:
    """The CUDA code path (one ``decode_jpeg`` call per chunk, float resize, orientation from the
    header), run on the CPU device: what this machine can check of it."""
    from cvserve.preprocess.torchvision_backend import TorchvisionPreprocessor

    pre = TorchvisionPreprocessor(PARITY_SPECS["letterbox"], max_batch_size=8)
    pre.batched = True
    names = [*corpus, "no scan data"]
    bad, _ = bad_inputs()["no scan data"]
    got = pre([*corpus.values(), bad])
    assert isinstance(got[-1], PreprocessError) and "corrupt JPEG" in got[-1].reason
    assert failures(got[:-1], references["letterbox"], names[:-1]) == []


def test_dali_hands_on_its_batch_without_a_copy_and_it_outlives_later_runs(corpus) -> None:
    """The DALI CPU pixels are views of DALI's output (no copy); the next runs leave them as
    they were (the dynamic executor does not reuse a batch someone holds), and a request of
    consecutive images is a view of the batch, of a reordered one a stacked copy."""
    data = list(corpus.values())[:6]
    with make_preprocessor(PreprocessSpec(), "dali", max_batch_size=8, threads=2) as pre:
        first = pre(data)
        kept = [r.pixels.copy() for r in first]
        for _ in range(3):
            pre(data[::-1])
        for result, copy in zip(first, kept, strict=True):
            np.testing.assert_array_equal(result.pixels, copy)
        pixels, meta = stack_results(first[1:4])
        assert np.shares_memory(pixels, first[0].batch) and pixels.shape[0] == 3
        np.testing.assert_array_equal(pixels, np.stack(kept[1:4]))
        reordered, _ = stack_results([first[3], first[1]])
        assert not np.shares_memory(reordered, first[0].batch)
        np.testing.assert_array_equal(reordered, np.stack([kept[3], kept[1]]))
        np.testing.assert_array_equal(meta, np.stack([r.meta for r in first[1:4]]))
