"""A pipeline's stages fused into one model (`models.fusion`): the spec it makes, its config,
what cannot be fused, the views that take it apart, and — served beside the ensembles by the
suite's Triton — the same answers as the ensemble, a bad image failing only its own request."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cvserve.deploy.host import usable_cores
from cvserve.deploy.triton import TritonServer
from cvserve.models.client import InferenceError, PipelineClient
from cvserve.models.fusion import NotFusable, fusable, fuse_stages, fused_settings
from cvserve.models.params import FusedParams
from cvserve.models.repository.config import STAGE_PARAMETER, read_config
from cvserve.models.repository.local import write_repository
from cvserve.pipelines.catalog import classify, file_specs, image_pipeline
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import (
    FUSED_PARTS,
    PREPROCESS_TIMES,
    STAGE_TIMES,
    is_fused,
    own_times,
    unfused,
    with_devices,
)
from cvserve.preprocess.spec import PreprocessSpec
from cvserve.preprocess.tensors import BOXES, LABELS, META, SCORES
from cvserve.profiling.categories import FUSED
from cvserve.profiling.kafkasweep import as_profiled
from cvserve.profiling.sweep_plan import external_targets, plan_servers
from cvserve.profiling.tune import Space, axis_candidates, settings_of

FILE = """\
name: mine
model:
  arch: mobilenet_v3_small
postprocess:
  kind: classification
serving:
  fuse_stages: true
"""


def test_classify_fuses_into_one_model(tmp_path: Path) -> None:
    spec = classify("mobilenet_v3_small", max_batch_size=4, instances=2, dali_threads=1)
    fused = fuse_stages(spec)
    (stage,) = fused.stages
    assert stage.name == "classify_fused" and stage.fused == spec.stages
    # and STAGE_TIMES, for the profiler only: the ensemble does not map it (below)
    assert stage.inputs == spec.stages[0].inputs and stage.outputs == (*spec.outputs, STAGE_TIMES)
    assert (stage.batching, stage.instances) == (spec.stages[1].batching, 2)
    assert (fused.inputs, fused.outputs) == (spec.inputs, spec.outputs)
    write_repository(fused, tmp_path)
    config = read_config(tmp_path / "classify_fused" / "config.pbtxt")
    params = FusedParams.from_json(config.parameters[STAGE_PARAMETER].string_value)
    assert params == stage.params and params.preprocess.num_threads == 1
    assert params.postprocess_inputs == tuple(t.name for t in spec.stages[2].inputs)
    assert not (tmp_path / "classify_preprocess").exists()
    ensemble = read_config(tmp_path / "classify" / "config.pbtxt")
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["classify_fused"]
    (step,) = ensemble.ensemble_scheduling.step
    assert STAGE_TIMES.name not in step.output_map, "asked for only by profiling"
    assert [o.name for o in ensemble.output] == [t.name for t in spec.outputs]


def test_without_a_postprocess_meta_passes_through_when_read() -> None:
    spec = image_pipeline("detect", "bright_region", max_batch_size=4)
    pre, dnn, _ = spec.stages
    meta = pre.outputs[-1]
    bare = dataclasses.replace(spec, stages=(pre, dnn), outputs=(*dnn.outputs, meta))
    (stage,) = fuse_stages(bare).stages
    assert [t.name for t in stage.outputs][-2:] == [META, STAGE_TIMES.name] and meta.name == META
    assert stage.params.postprocess is None  # type: ignore[attr-defined]


def test_a_user_postprocess_module_is_bundled_with_the_fused_model(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("def post(tensors):\n    return tensors\n")
    spec = classify("mobilenet_v3_small", max_batch_size=4)
    pre, dnn, post = spec.stages
    user = dataclasses.replace(post.params, function="mine:post", path=str(tmp_path))
    spec = dataclasses.replace(spec, stages=(pre, dnn, dataclasses.replace(post, params=user)))
    write_repository(fuse_stages(spec), tmp_path / "repo")
    version = tmp_path / "repo" / "classify_fused" / "1"
    assert (version / "mine.py").is_file()
    config = read_config(version.parent / "config.pbtxt")
    params = FusedParams.from_json(config.parameters[STAGE_PARAMETER].string_value)
    assert params.postprocess is not None and params.postprocess.path == "."


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (
            with_devices(classify("mobilenet_v3_small"), {"inference": "gpu"}),
            "preprocessing runs on the cpu, its DNN on the gpu",
        ),
        (
            classify(
                "mobilenet_v3_small",
                preprocess=PreprocessSpec(resize_mode="dynamic", crop=(64, 64)),
            ),
            "dynamic",
        ),
    ],
)
def test_what_cannot_be_fused_says_why(spec: PipelineSpec, reason: str) -> None:
    with pytest.raises(NotFusable, match=reason):
        fuse_stages(spec)


def test_a_stage_between_preprocessing_and_the_dnn_is_refused() -> None:
    spec = classify("mobilenet_v3_small")
    pre, dnn, post = spec.stages
    moved = dataclasses.replace(spec, stages=(pre, dataclasses.replace(post, inputs=()), dnn))
    with pytest.raises(NotFusable, match="between"):
        fuse_stages(moved)


@pytest.mark.server
def test_fused_classify_answers_as_the_ensemble(
    triton: TritonServer,
    classify_spec: PipelineSpec,
    fused_specs: dict[str, PipelineSpec],
    sample_images: dict[str, bytes],
) -> None:
    images = list(sample_images.values())
    with (
        PipelineClient(triton.grpc_url, classify_spec) as ensemble,
        PipelineClient(triton.grpc_url, fused_specs["classify"]) as fused,
    ):
        want, got = ensemble.infer(images), fused.infer(images)
    np.testing.assert_array_equal(got[LABELS][:, 0], want[LABELS][:, 0])
    np.testing.assert_allclose(got[SCORES], want[SCORES], atol=1e-4)


@pytest.mark.server
def test_fused_detector_places_boxes_in_the_original_image(
    triton: TritonServer,
    task_specs: dict[str, PipelineSpec],
    fused_specs: dict[str, PipelineSpec],
    sample_images: dict[str, bytes],
) -> None:
    images = [sample_images["640x480.jpeg"], sample_images["1920x1080.jpeg"]]
    with (
        PipelineClient(triton.grpc_url, task_specs["detect_bright"]) as ensemble,
        PipelineClient(triton.grpc_url, fused_specs["detect_bright"]) as fused,
    ):
        want, got = ensemble.infer(images), fused.infer(images)
    assert want.keys() == got.keys()
    np.testing.assert_allclose(got[BOXES], want[BOXES], atol=1e-3)


@pytest.mark.server
def test_a_bad_image_fails_only_its_own_request(
    triton: TritonServer, fused_specs: dict[str, PipelineSpec], sample_images: dict[str, bytes]
) -> None:
    good = sample_images["300x200.jpeg"]
    spec = fused_specs["classify"]

    def send(n: int) -> np.ndarray | str:
        with PipelineClient(triton.grpc_url, spec) as client:
            try:
                return client.infer([good if n % 4 else b"just text, not an image"])[LABELS]
            except InferenceError as exc:
                return str(exc)

    with ThreadPoolExecutor(8) as pool:  # some of them share the model's batches
        answers = list(pool.map(send, range(16)))
    refused = [a for n, a in enumerate(answers) if n % 4 == 0]
    assert all(
        isinstance(a, str) and "PreprocessError: image 0: not a recognised image" in a
        for a in refused
    ), refused
    labels = [a for n, a in enumerate(answers) if n % 4]
    assert all(isinstance(a, np.ndarray) and (a == labels[0]).all() for a in labels)


def test_unfused_gives_the_stages_back_as_they_were() -> None:
    spec = classify("mobilenet_v3_small", max_batch_size=4)
    assert unfused(fuse_stages(spec)) == spec and unfused(spec) is spec
    assert is_fused(fuse_stages(spec)) and not is_fused(spec)
    # Profiled across a broker the fused model returns its parts' times (which unfused drops);
    # the stages apart each return their own, at their role's place.
    assert unfused(as_profiled(fuse_stages(spec))) == spec
    apart = as_profiled(spec)
    assert [t.name for t in apart.outputs][-3:] == [own_times(r).name for r in FUSED_PARTS]
    assert [s.outputs[-1] for s in apart.stages] == [own_times(s.role) for s in spec.stages]


def test_a_file_asks_for_fusion_and_the_command_line_overrides_it(tmp_path: Path) -> None:
    path = tmp_path / "fused.yaml"
    path.write_text(FILE)
    (spec,) = file_specs(path)[1]
    assert [s.name for s in spec.stages] == ["mine_fused"]
    (apart,) = file_specs(path, fuse_stages=False)[1]
    assert not is_fused(apart)
    path.write_text(FILE.replace("serving:", "serving:\n  device: gpu"))
    (on_gpu,) = file_specs(path)[1]  # DALI mixed → the DNN → postprocessing in one GPU model
    assert [(s.name, s.device) for s in on_gpu.stages] == [("mine_fused", "gpu")]
    assert all(part.device == "gpu" for part in on_gpu.stages[0].fused)


def test_stages_on_two_devices_are_not_fused_and_say_so() -> None:
    spec = with_devices(classify("mobilenet_v3_small"), {"preprocess": "gpu"})
    assert fusable(spec) == "its preprocessing runs on the gpu, its DNN on the cpu"
    with pytest.raises(NotFusable, match="preprocessing runs on the gpu"):
        fuse_stages(spec)


def test_the_profiler_serves_a_fused_pipeline_fused_returning_its_parts() -> None:
    spec = fuse_stages(classify("mobilenet_v3_small", max_batch_size=4))
    plans, notes = plan_servers(spec, ["server-cpu"], gpu=False, split_preprocess=True)
    (served,) = plans[0].specs
    (stage,) = served.stages
    assert stage.name == "classify_fused" and notes == []
    assert [t.name for t in served.outputs][-2:] == [STAGE_TIMES.name, PREPROCESS_TIMES.name]
    assert STAGE_TIMES in stage.outputs and PREPROCESS_TIMES in stage.outputs
    assert plans[0].targets[0].roles == {"classify_fused": FUSED}
    # With a GPU the DNN moves there and preprocessing stays: two devices, served apart.
    plans, notes = plan_servers(spec, ["server-cpu"], gpu=True)
    assert not is_fused(plans[0].specs[0])
    assert len(notes) == 1 and "profiled with its stages apart" in notes[0]


def test_tune_tries_fused_per_core_and_as_threaded_and_on_a_gpu_as_served() -> None:
    spec = classify("mobilenet_v3_small", max_batch_size=4)
    best = settings_of(spec)
    apart, *both = axis_candidates("fuse_stages", best, Space(), spec)
    assert not apart["fuse_stages"] and apart == best
    fused = {**best, **fused_settings(usable_cores())}  # an instance per core
    assert fused in both and {**best, "fuse_stages": True} in both  # or as the best is threaded
    assert settings_of(classify("mobilenet_v3_small", **fused))["fuse_stages"]
    gpu = classify("mobilenet_v3_small", device="gpu")
    apart, fused_gpu = axis_candidates("fuse_stages", settings_of(gpu), Space(), gpu)
    assert fused_gpu == {**settings_of(gpu), "fuse_stages": True}  # no instance per core


@pytest.mark.server
def test_profiling_a_running_fused_pipeline_calls_its_fused_model_for_its_parts(
    triton: TritonServer, fused_specs: dict[str, PipelineSpec]
) -> None:
    targets, skipped = external_targets(triton.grpc_url, fused_specs["classify"], ["server-cpu"])
    (target,) = targets
    assert skipped == [] and target.ensemble.name == "fused_classify_fused"
    assert STAGE_TIMES in target.ensemble.outputs
