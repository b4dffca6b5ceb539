"""cvserve's DALI stage beside the same graph bare (`profiling.bench.bare_dali`): the stage gives
the bare pipeline's pixels and META bit for bit, and the side-by-side run reports per round."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cvserve.preprocess.dali_graph import gpu_count
from cvserve.preprocess.parity import PARITY_SPECS, parity_images
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling.bench.bare_dali import BarePipeline, stage_step, stage_vs_bare

DENSE = [name for name, spec in PARITY_SPECS.items() if not spec.dynamic]


def as_numpy(batch: object) -> np.ndarray:
    if hasattr(batch, "as_cpu"):  # a DALI GPU batch
        batch = batch.as_cpu()
    return batch.as_array()  # type: ignore[attr-defined]


def same_output(spec_name: str, device: str) -> None:
    spec = dataclasses.replace(PARITY_SPECS[spec_name], device=device)
    images = list(parity_images().values())
    pixels, meta = BarePipeline(spec, images, len(images), 2, device).first()
    answers = stage_step(spec, images, len(images), 2, device)()
    stage_pixels = np.stack([np.asarray(torch.as_tensor(p).cpu()[0]) for p, _ in answers])
    np.testing.assert_array_equal(stage_pixels, as_numpy(pixels))
    np.testing.assert_array_equal(np.stack([m[0] for _, m in answers]), as_numpy(meta))


@pytest.mark.parametrize("spec_name", DENSE)
def test_the_stage_gives_the_bare_graphs_output_bit_for_bit(spec_name: str) -> None:
    same_output(spec_name, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(gpu_count() == 0 or not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("spec_name", DENSE)
def test_on_the_gpu_too(spec_name: str) -> None:
    same_output(spec_name, "gpu")


def test_stage_and_bare_are_measured_round_by_round() -> None:
    spec = PARITY_SPECS["shorter_crop"]
    images = [synthetic_image(160, 120, seed) for seed in range(3)]
    row = stage_vs_bare(spec, images, batch=4, threads=1, rounds=3, min_time_s=0.05)
    assert [r["round"] for r in row["rounds"]] == [1, 2, 3]
    assert list(row["rounds"][0])[:2] == ["stage", "bare"]  # then the order alternates
    assert list(row["rounds"][1])[:2] == ["bare", "stage"]
    ratios = sorted(r["stage"] / r["bare"] for r in row["rounds"])
    assert row["ratio"]["median"] == pytest.approx(ratios[1])
    assert row["ratio"]["min"] == pytest.approx(ratios[0]) and row["ratio"]["rounds"] == 3
