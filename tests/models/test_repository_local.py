from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cvserve.models.params import DnnParams
from cvserve.models.repository.config import STAGE_PARAMETER, read_config
from cvserve.models.repository.local import served_stages, write_repository
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.catalog import classify
from cvserve.pipelines.spec import PipelineSpec, StageSpec, TensorSpec
from cvserve.pipelines.variants import own_times, tensor_input, with_stage_times


def test_classify_repository_configs_parse_and_follow_the_spec(tmp_path: Path) -> None:
    spec = classify("resnet50", max_batch_size=16, instances=2, top_k=3)
    write_repository(spec, tmp_path)
    pre = read_config(tmp_path / "classify_preprocess" / "config.pbtxt")
    assert pre.backend == "python" and pre.max_batch_size == 16
    assert pre.input[0].allow_ragged_batch
    assert list(pre.output[0].dims) == [3, 224, 224]
    assert pre.instance_group[0].count == 2
    assert STAGE_PARAMETER in pre.parameters
    post = read_config(tmp_path / "classify_postprocess" / "config.pbtxt")
    assert [list(o.dims) for o in post.output] == [[3], [3]]
    ensemble = read_config(tmp_path / "classify" / "config.pbtxt")
    assert ensemble.platform == "ensemble"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "classify_preprocess",
        "classify_dnn",
        "classify_postprocess",
    ]
    adapter = (tmp_path / "classify_dnn" / "1" / "model.py").read_text()
    assert "from cvserve.models.triton.dnn import TritonPythonModel" in adapter


def test_spec_refuses_a_stage_input_nobody_produces() -> None:
    lonely = StageSpec(
        "m", "inference", "x", inputs=(TensorSpec("NOPE", "float32", (3,)),), outputs=()
    )
    with pytest.raises(ValueError, match="NOPE"):
        PipelineSpec("p", (lonely,), inputs=(TensorSpec("IMAGE", "uint8", (-1,)),), outputs=())


def test_gpu_stages_let_gpu_tensors_through(tmp_path: Path) -> None:
    write_repository(classify(device="gpu"), tmp_path)
    config = read_config(tmp_path / "classify_dnn" / "config.pbtxt")
    assert config.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU


def test_cli_repo_build_writes_a_repository(tmp_path: Path) -> None:
    code = main(
        [
            "repo",
            "build",
            "--pipeline",
            "classify",
            "--device",
            "cpu",
            "--arch",
            "resnet18",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "classify",
        "classify_dnn",
        "classify_postprocess",
        "classify_preprocess",
    ]
    config = read_config(tmp_path / "classify_dnn" / "config.pbtxt")
    params = DnnParams.from_json(config.parameters[STAGE_PARAMETER].string_value)
    assert params.arch == "resnet18"


def test_variants_served_together_share_each_model_with_every_output_they_ask(
    tmp_path: Path,
) -> None:
    spec = classify("mobilenet_v3_small", max_batch_size=2)
    timed = dataclasses.replace(with_stage_times(spec), name="classify_timed")
    write_repository([spec, timed, tensor_input(spec)], tmp_path)  # either order serves all
    write_repository([timed, spec], tmp_path / "b")
    for root in (tmp_path, tmp_path / "b"):
        dnn = read_config(root / "classify_dnn" / "config.pbtxt")
        assert [o.name for o in dnn.output] == ["LOGITS", own_times("inference").name]
        plain = read_config(root / "classify" / "config.pbtxt")
        assert [o.name for o in plain.output] == [t.name for t in spec.outputs]
    other = dataclasses.replace(spec, stages=(spec.stages[0], *timed.stages[1:]), name="o")
    assert served_stages([spec, other])[1] == timed.stages[1]
    # The same model names batched otherwise: not variants of one pipeline, refused.
    other_batch = classify("mobilenet_v3_small", max_batch_size=4)
    with pytest.raises(ValueError, match="declare model classify_preprocess apart"):
        served_stages([spec, other_batch])
