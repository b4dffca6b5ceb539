"""Pipelines derived from a spec for the profiler, and the client-side (naive) preprocessing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cvserve.models.repository.config import read_config
from cvserve.models.repository.local import write_repository
from cvserve.pipelines.catalog import classify, detect
from cvserve.pipelines.variants import (
    FUSED_PARTS,
    PREPROCESS_TIMES,
    STAGE_TIMES,
    TIMED,
    TO_HOST,
    own_times,
    reported_stage_times,
    tensor_input,
    time_slot,
    with_devices,
    with_preprocess_times,
    with_stage_times,
)
from cvserve.preprocess.geometry import meta, placement
from cvserve.preprocess.naive import NaivePreprocessor
from cvserve.preprocess.spec import PreprocessError, PreprocessParams, PreprocessSpec
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.preprocess.tensors import META, PIXELS
from cvserve.profiling.sweep_plan import plan_servers


def test_tensor_variant_drops_preprocessing_and_takes_what_later_stages_read() -> None:
    spec = classify("mobilenet_v3_small")
    variant = tensor_input(spec)
    assert variant.name == "classify_tensor"
    assert [s.role for s in variant.stages] == ["inference", "postprocess"]
    assert [t.name for t in variant.inputs] == [PIXELS]
    assert variant.outputs == spec.outputs
    assert [t.name for t in tensor_input(detect()).inputs] == [PIXELS, META]


def test_tensor_variant_writes_a_valid_ensemble_beside_the_original(tmp_path) -> None:
    spec = classify("mobilenet_v3_small")
    write_repository(spec, tmp_path)
    write_repository(tensor_input(spec), tmp_path)
    config = read_config(tmp_path / "classify_tensor" / "config.pbtxt")
    assert [step.model_name for step in config.ensemble_scheduling.step] == [
        "classify_dnn",
        "classify_postprocess",
    ]
    assert [i.name for i in config.input] == [PIXELS]


def test_preprocess_times_variant_returns_them_from_the_ensemble(tmp_path) -> None:
    spec = with_preprocess_times(classify("mobilenet_v3_small"))
    assert spec.stage_by_role("preprocess").outputs[-1] == PREPROCESS_TIMES
    write_repository(spec, tmp_path)
    config = read_config(tmp_path / "classify" / "config.pbtxt")
    assert PREPROCESS_TIMES.name in [o.name for o in config.output]
    assert PREPROCESS_TIMES.name in dict(config.ensemble_scheduling.step[0].output_map)


def test_placements_keep_the_dnn_where_it_is_and_skip_gpu_without_one() -> None:
    base = classify("mobilenet_v3_small")
    plans, skipped = plan_servers(base, ("client-cpu", "server-cpu", "server-gpu"), gpu=False)
    assert skipped == ["server-gpu skipped: no CUDA GPU on this machine"]
    assert [[t.placement for t in p.targets] for p in plans] == [["client-cpu", "server-cpu"]]
    plans, skipped = plan_servers(base, ("client-cpu", "server-cpu", "server-gpu"), gpu=True)
    assert not skipped and len(plans) == 2  # same model names: one server each
    devices = [{s.role: s.device for t in p.targets for s in t.ensemble.stages} for p in plans]
    assert devices[0] == {"inference": "gpu", "postprocess": "cpu", "preprocess": "cpu"}
    assert devices[1]["preprocess"] == "gpu"
    assert with_devices(base, {"inference": "gpu"}).stage_by_role("preprocess").device == "cpu"
    # The preprocess adapter runs on its spec's device: it moves with the stage.
    moved = with_devices(base, {"preprocess": "gpu"}).stage_by_role("preprocess")
    assert moved.device == moved.params_as(PreprocessParams).spec.device == "gpu"
    with pytest.raises(ValueError, match="unknown placement"):
        plan_servers(base, ("edge-tpu",), gpu=False)


def test_naive_preprocessing_follows_the_spec_geometry_and_normalisation() -> None:
    spec = PreprocessSpec(resize_shorter=73, crop=(64, 64))
    pre = NaivePreprocessor(spec)
    rgb = pre.decode(synthetic_image(160, 120, seed=3))
    assert rgb.shape == (120, 160, 3) and rgb.dtype == np.uint8
    canvas, m = pre.resize_crop(rgb)
    assert canvas.shape == (64, 64, 3)
    np.testing.assert_array_equal(m, meta(placement(120, 160, spec)))
    pixels = pre.normalize(canvas)
    assert pixels.shape == spec.output_shape and pixels.dtype == np.float32
    expected = (canvas[5, 7, 1] - spec.mean[1]) / spec.std[1]
    assert pixels[1, 5, 7] == pytest.approx(expected, rel=1e-5)


def test_naive_preprocessing_refuses_bytes_opencv_cannot_decode() -> None:
    with pytest.raises(PreprocessError, match="cannot decode"):
        NaivePreprocessor(PreprocessSpec()).decode(b"not an image")


def test_the_stages_own_times_add_up_like_a_fused_models_parts() -> None:
    pre, post = [0] * len(TIMED), [0] * len(TIMED)
    pre[time_slot("preprocess", "preprocess")] = 7
    post[time_slot("postprocess", "postprocess")] = 2
    post[time_slot("postprocess", TO_HOST)] = 1
    rows = {own_times("preprocess").name: pre, own_times("postprocess").name: post}
    added = [0, 7, 0, 0, 0, 0, 0, 2, 1]
    assert reported_stage_times(rows) == added
    fused = list(range(len(TIMED)))
    assert reported_stage_times({STAGE_TIMES.name: fused, "LABELS": [1, 2]}) == fused
    assert reported_stage_times({PREPROCESS_TIMES.name: [1, 1, 1]}) is None
    # A model built by an earlier cvserve (int64 [3]) is not read as this layout.
    assert reported_stage_times({STAGE_TIMES.name: [5, 4, 3]}) is None
    assert reported_stage_times({**rows, STAGE_TIMES.name: [5, 4, 3]}) == added
    # Each role's places: its inputs' copy, its work, its answers' copy.
    assert [TIMED[time_slot(r, r)] for r in FUSED_PARTS] == [(r, r) for r in FUSED_PARTS]
    assert STAGE_TIMES.dims == (len(FUSED_PARTS) * 3,) == own_times("inference").dims
    # Every profiled target of a server asks each of its models for its own work.
    plans, _ = plan_servers(classify("mobilenet_v3_small"), ["client-cpu", "server-cpu"], False)
    tensor, served = plans[0].specs
    assert [t.name for t in tensor.outputs][-2:] == [
        own_times(r).name for r in ("inference", "postprocess")
    ]
    assert own_times("preprocess") in served.outputs


def test_two_stages_of_one_role_cannot_report_their_own_times() -> None:
    spec = classify("mobilenet_v3_small")
    post = spec.stage_by_role("postprocess")
    second = dataclasses.replace(
        post,
        name="classify_post2",
        outputs=tuple(dataclasses.replace(t, name=f"{t.name}2") for t in post.outputs),
    )
    twice = dataclasses.replace(spec, stages=(*spec.stages, second))
    with pytest.raises(ValueError, match="two stages of one role"):
        with_stage_times(twice)
