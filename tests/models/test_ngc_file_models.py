"""`cvserve repo build --target ngc --file F`: a user's model files go to Triton's own backends
with their own tensor names; a model of the user's repository is copied as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
from own_models import INPUT, OUTPUTS, write_models_and_files

from cvserve.models.repository.config import read_config
from cvserve.pipelines.app.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_models_and_files(tmp_path_factory.mktemp("own-models"))


def build(files: dict[str, Path], name: str, out: Path) -> Path:
    argv = ["repo", "build", "--file", str(files[name]), "--out", str(out), "--target", "ngc"]
    assert main([*argv, "--device", "gpu"]) == 0
    return out


def test_an_onnx_file_is_served_by_onnxruntime_under_its_own_names(
    files: dict[str, Path], tmp_path: Path
) -> None:
    repo = build(files, "cls_onnx", tmp_path)
    dnn = read_config(repo / "cls_onnx_dnn" / "config.pbtxt")
    assert dnn.platform == "onnxruntime_onnx" and dnn.backend == ""
    assert (repo / "cls_onnx_dnn" / "1" / "model.onnx").read_bytes() == (
        files["cls_onnx"].parent / "classifier.onnx"
    ).read_bytes()
    assert [i.name for i in dnn.input] == [INPUT]
    assert [o.name for o in dnn.output] == [OUTPUTS["classifier"]]
    assert dnn.instance_group[0].kind == dnn.instance_group[0].KIND_GPU
    pre = read_config(repo / "cls_onnx_preprocess" / "config.pbtxt")
    assert pre.backend == "dali" and (repo / "cls_onnx_preprocess" / "1" / "model.dali").exists()
    assert [o.name for o in pre.output] == [INPUT, "META"]
    ensemble = read_config(repo / "cls_onnx" / "config.pbtxt")
    steps = {s.model_name: s for s in ensemble.ensemble_scheduling.step}
    assert dict(steps["cls_onnx_dnn"].input_map) == {INPUT: INPUT}
    assert dict(steps["cls_onnx_dnn"].output_map) == {OUTPUTS["classifier"]: OUTPUTS["classifier"]}


def test_a_torchscript_file_is_served_by_libtorch(files: dict[str, Path], tmp_path: Path) -> None:
    repo = build(files, "cls_ts", tmp_path)
    dnn = read_config(repo / "cls_ts_dnn" / "config.pbtxt")
    assert dnn.platform == "pytorch_libtorch"
    assert (repo / "cls_ts_dnn" / "1" / "model.pt").is_file()
    assert [i.name for i in dnn.input] == ["INPUT__0"] and dnn.output[0].name == "OUTPUT__0"


def test_a_model_of_the_users_repository_is_copied_and_only_its_stages_added(
    files: dict[str, Path], tmp_path: Path
) -> None:
    repo = build(files, "brightness", tmp_path)
    user = files["brightness"].parent / "user_repo" / "brightness"
    assert (repo / "brightness" / "config.pbtxt").read_text() == (user / "config.pbtxt").read_text()
    assert (repo / "brightness" / "1" / "model.py").is_file()
    assert sorted(p.name for p in repo.iterdir()) == [
        "brightness",
        "brightness_pipeline",
        "brightness_pipeline_preprocess",
    ]
