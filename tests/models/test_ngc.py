"""`cvserve repo build --target ngc`: a repository for the NGC Triton container, checked here for
everything that can be: configs parse, the DALI model and exported DNN load and agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cvserve.models.export import input_name
from cvserve.models.repository.config import read_config
from cvserve.models.repository.ngc import write_ngc_repository
from cvserve.models.zoo import build_model
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.catalog import image_pipeline


@pytest.fixture(scope="module")
def classify_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = image_pipeline("classify", "mobilenet_v3_small", device="gpu", max_batch_size=16)
    return write_ngc_repository(spec, tmp_path_factory.mktemp("ngc"), "onnx", tensorrt=True)


def test_configs_use_the_ngc_backends(classify_repo: Path) -> None:
    pre = read_config(classify_repo / "classify_preprocess" / "config.pbtxt")
    assert (
        pre.backend == "dali"
        and (classify_repo / "classify_preprocess" / "1" / "model.dali").exists()
    )
    assert [i.name for i in pre.input] == ["IMAGE"]
    dnn = read_config(classify_repo / "classify_dnn" / "config.pbtxt")
    assert dnn.platform == "onnxruntime_onnx" and dnn.max_batch_size == 16
    assert dnn.instance_group[0].kind == dnn.instance_group[0].KIND_GPU
    accelerator = dnn.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt"
    post = read_config(classify_repo / "classify_postprocess" / "config.pbtxt")
    assert post.backend == "python"


def test_ensemble_maps_spec_names_onto_exported_names(classify_repo: Path) -> None:
    ensemble = read_config(classify_repo / "classify" / "config.pbtxt")
    steps = {s.model_name: s for s in ensemble.ensemble_scheduling.step}
    assert dict(steps["classify_dnn"].input_map) == {input_name(): "PIXELS"}
    assert dict(steps["classify_dnn"].output_map) == {"OUTPUT__0": "LOGITS"}
    assert dict(steps["classify_postprocess"].input_map) == {"LOGITS": "LOGITS"}


def test_exported_dnn_matches_eager(classify_repo: Path) -> None:
    session = ort.InferenceSession(
        str(classify_repo / "classify_dnn" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = build_model("mobilenet_v3_small")(x).numpy()
    (got,) = session.run(None, {input_name(): x.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(), rtol=1e-3)


def test_cli_builds_every_pipeline_for_ngc(tmp_path: Path) -> None:
    # Detectors are exported as TorchScript whatever the format asked.
    assert (
        main(
            [
                "repo",
                "build",
                "--pipeline",
                "detect",
                "--arch",
                "ssdlite320_mobilenet_v3_large",
                "--target",
                "ngc",
                "--format",
                "onnx",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    dnn = read_config(tmp_path / "detect_dnn" / "config.pbtxt")
    assert dnn.platform == "pytorch_libtorch"
    assert [o.name for o in dnn.output] == [f"OUTPUT__{i}" for i in range(4)]
    scripted = torch.jit.load(str(tmp_path / "detect_dnn" / "1" / "model.pt"))
    boxes, scores, labels, count = scripted(torch.zeros(1, 3, 320, 320))
    assert boxes.shape == (1, 100, 4) and count.shape == (1, 1)
    pre = read_config(tmp_path / "detect_preprocess" / "config.pbtxt")
    assert [o.name for o in pre.output] == ["PIXELS", "META"]


@pytest.mark.parametrize(
    ("engine", "platform", "backend", "model_file"),
    [
        ("torch", "pytorch_libtorch", "", "model.pt"),
        ("torch_channels_last", "pytorch_libtorch", "", "model.pt"),
        ("onnxruntime", "onnxruntime_onnx", "", "model.onnx"),
        ("openvino", "", "openvino", "model.onnx"),
        ("tensorrt", "onnxruntime_onnx", "", "model.onnx"),
    ],
)
def test_the_engine_field_picks_the_ngc_backend(
    tmp_path: Path, engine: str, platform: str, backend: str, model_file: str
) -> None:
    spec = image_pipeline(
        "classify", "mobilenet_v3_small", device="gpu", max_batch_size=4, engine=engine
    )
    # --format and --tensorrt are what a pipeline without an engine gets; the engine wins.
    repo = write_ngc_repository(spec, tmp_path, "torchscript" if "onnx" in model_file else "onnx")
    dnn = read_config(repo / "classify_dnn" / "config.pbtxt")
    assert (dnn.platform, dnn.backend) == (platform, backend)
    assert (repo / "classify_dnn" / "1" / model_file).exists()
    accelerators = dnn.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == (["tensorrt"] if engine == "tensorrt" else [])
    kind = dnn.instance_group[0].kind
    # OpenVINO runs on the server's CPU; the others on its GPU.
    assert kind == (
        dnn.instance_group[0].KIND_CPU if engine == "openvino" else dnn.instance_group[0].KIND_GPU
    )
    if engine == "openvino":
        assert dnn.default_model_filename == "model.onnx"


def test_a_tensorrt_engine_on_the_cpu_falls_back_with_its_reason() -> None:
    from cvserve.models.params import DnnParams
    from cvserve.models.runners import load_engine

    loaded = load_engine(DnnParams(arch="mobilenet_v3_small", engine="tensorrt"))
    assert loaded.engine == "torch"
    assert "TensorRT runs on the NGC target's GPU" in str(loaded.fallback)
