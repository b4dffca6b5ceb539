"""GPU paths under the same contract (skipped without a GPU; `profiling.bench.gpu_check` runs
the same checks in one go on a lent GPU machine)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cvserve.preprocess.backends import make_preprocessor
from cvserve.preprocess.dali_graph import gpu_count
from cvserve.preprocess.parity import PARITY_SPECS, failures

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        gpu_count() == 0 or not torch.cuda.is_available(), reason="needs a CUDA GPU"
    ),
]


@pytest.mark.parametrize("spec_name", list(PARITY_SPECS))
def test_dali_mixed_matches_reference_and_dali_cpu(spec_name, corpus, references) -> None:
    spec = PARITY_SPECS[spec_name]
    data = list(corpus.values())
    gpu = make_preprocessor(dataclasses.replace(spec, device="gpu"), "dali", 8, 2)(data)
    assert all(r.pixels.is_cuda for r in gpu)
    assert failures(gpu, references[spec_name], list(corpus)) == []
    cpu = make_preprocessor(spec, "dali", 8, 2)(data)
    assert failures(gpu, cpu, list(corpus)) == []


@pytest.mark.parametrize("spec_name", list(PARITY_SPECS))
def test_torchvision_cuda_matches_reference(spec_name, corpus, references) -> None:
    # Its JPEG decode upsamples chroma otherwise: those images keep their own, stated bound.
    spec = dataclasses.replace(PARITY_SPECS[spec_name], device="gpu")
    got = make_preprocessor(spec, "torchvision", 8)(list(corpus.values()))
    assert failures(got, references[spec_name], list(corpus), gpu_jpeg_chroma=True) == []


def test_dali_mixed_timed_steps_give_the_fused_output(corpus) -> None:
    from cvserve.preprocess.dali import DaliPreprocessor

    spec = dataclasses.replace(PARITY_SPECS["letterbox"], device="gpu")
    data = list(corpus.values())
    fused = DaliPreprocessor(spec, 8, 2)(data)
    timed, step_ns = DaliPreprocessor(spec, 8, 2, step_times=True).timed(data)
    for a, b in zip(timed, fused, strict=True):
        assert torch.equal(a.pixels, b.pixels)
    assert (step_ns > 0).all()
