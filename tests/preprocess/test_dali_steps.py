"""DALI timed step by step (`preprocess.dali_steps`): the fused graph's output, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from preprocess_cases import bad_inputs

from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.dali_steps import define_step_pipelines
from cvserve.preprocess.parity import PARITY_SPECS
from cvserve.preprocess.preprocessor import STEPS, Preprocessed
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec
from cvserve.preprocess.synthetic import synthetic_image


def assert_identical(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.pixels.dtype == b.pixels.dtype
        np.testing.assert_array_equal(a.pixels, b.pixels)
        np.testing.assert_array_equal(a.meta, b.meta)


@pytest.mark.parametrize("spec_name", list(PARITY_SPECS))
def test_timed_steps_give_the_fused_pipelines_output_bit_for_bit(spec_name, corpus) -> None:
    """Every resize mode (crop inside the resize, crop + pad after it), dtype and layout; four
    chunks of 8, so each step's buffers are refilled while the next step holds the last batch."""
    spec = PARITY_SPECS[spec_name]
    data = list(corpus.values())
    fused = DaliPreprocessor(spec, 8, 2)(data)
    results, step_ns = DaliPreprocessor(spec, 8, 2, step_times=True).timed(data)
    assert_identical(results, fused)
    assert step_ns.dtype == np.int64 and step_ns.shape == (len(STEPS),)
    assert np.all(step_ns > 0)


def test_outputs_survive_the_next_batch() -> None:
    """Results are copies: running other images (other sizes) afterwards does not change them."""
    spec = PreprocessSpec(resize_mode="letterbox", crop=(96, 128))
    first = [synthetic_image(320 + 16 * i, 240, seed=i) for i in range(3)]
    other = [synthetic_image(200, 400 + 8 * i, seed=10 + i) for i in range(3)]
    timed = DaliPreprocessor(spec, 4, 2, step_times=True)
    kept = timed(first)
    copies = [r.pixels.copy() for r in kept]
    timed(other)
    for result, copy in zip(kept, copies, strict=True):
        np.testing.assert_array_equal(result.pixels, copy)
    assert_identical(kept, DaliPreprocessor(spec, 4, 2)(first))


def test_bad_images_fail_alone_and_times_restart_per_call() -> None:
    spec = PreprocessSpec(resize_shorter=64, crop=(56, 56))
    bad, reason = bad_inputs()["no scan data"]  # passes the header check: the decoder refuses
    good = [synthetic_image(120, 90, seed=1), synthetic_image(90, 120, seed=2)]
    timed = DaliPreprocessor(spec, 4, 1, step_times=True)
    results, step_ns = timed.timed([good[0], bad, good[1]])
    assert isinstance(results[1], PreprocessError) and reason in results[1].reason
    assert isinstance(results[0], Preprocessed) and isinstance(results[2], Preprocessed)
    assert_identical([results[0], results[2]], DaliPreprocessor(spec, 4, 1)(good))
    assert np.all(step_ns > 0)
    _, nothing = timed.timed([])
    assert nothing.tolist() == [0, 0, 0]


def test_the_fused_preprocessor_does_not_time() -> None:
    fused = DaliPreprocessor(PreprocessSpec(), 2, 1)
    assert fused.steps is None
    with pytest.raises(RuntimeError, match="step_times=True"):
        fused.timed([synthetic_image(64, 48)])


def test_gpu_step_pipelines_are_defined_and_serialised_without_a_gpu() -> None:
    decode, resize_crop, normalize = define_step_pipelines(
        PreprocessSpec(resize_mode="letterbox"), 8, 2, "gpu", device_id=None
    )
    assert b"mixed" in decode.serialize()
    for pipe in (resize_crop, normalize):  # reading the previous step's output on the GPU
        assert b"gpu" in pipe.serialize()
