"""`Postprocessor`: torch tensors in and out, built-in functions on torch, a user's function on
NumPy arrays unless its pipeline file asks for torch tensors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from own_models import INPUT, OUTPUTS, SIZE, embedder, export_onnx

from cvserve.models.params import PostprocessParams
from cvserve.models.postprocessor import Postprocessor, UserFunctionError, checked_outputs
from cvserve.pipelines.catalog import file_specs
from cvserve.pipelines.pipeline_file import PipelineFileError, load_file
from cvserve.pipelines.spec import TensorSpec

USER = """\
import numpy as np
import torch


def numpy_double(t, factor=2):
    assert all(isinstance(v, np.ndarray) for v in t.values()), {k: type(v) for k, v in t.items()}
    return {"y": t["x"].astype(np.float64) * factor}  # float64: cast to the declared float32


def torch_double(t, factor=2):
    assert all(isinstance(v, torch.Tensor) for v in t.values()), {k: type(v) for k, v in t.items()}
    return {"y": t["x"] * factor}


def wrong_dtype(t):
    return {"y": torch.ones(len(t["x"]), 3, dtype=torch.complex64)}


def wrong_rank(t):
    return {"y": torch.ones(3)}
"""

OUT = [TensorSpec("y", "float32", (3,))]


@pytest.fixture
def module(tmp_path: Path) -> str:
    (tmp_path / "user_torch_post.py").write_text(USER)
    return str(tmp_path)


def user(module: str, function: str, tensors: str = "numpy", **options: object) -> Postprocessor:
    params = PostprocessParams(f"user_torch_post:{function}", options, module, tensors=tensors)  # type: ignore[arg-type]
    return Postprocessor(params, ["x"], OUT)


def test_a_built_in_function_takes_and_returns_torch_tensors() -> None:
    post = Postprocessor(
        PostprocessParams("top_k", {"k": 2}),
        ["LOGITS"],
        [TensorSpec("LABELS", "int64", (2,)), TensorSpec("SCORES", "float32", (2,))],
    )
    out = post({"LOGITS": torch.tensor([[0.0, 2.0, 1.0]])})
    assert out["LABELS"].tolist() == [[1, 2]] and out["SCORES"].dtype == torch.float32
    # A NumPy array is taken as a CPU tensor.
    assert post({"LOGITS": np.array([[0.0, 2.0, 1.0]])})["LABELS"].tolist() == [[1, 2]]


def test_a_user_function_gets_numpy_by_default_and_its_outputs_come_back_as_tensors(
    module: str,
) -> None:
    x = torch.ones((2, 3))
    y = user(module, "numpy_double", factor=3)({"x": x})["y"]
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.is_contiguous()
    assert torch.equal(y, 3 * x)


def test_a_user_function_gets_torch_tensors_when_its_file_asks(module: str) -> None:
    x = torch.ones((2, 3), dtype=torch.float64)
    y = user(module, "torch_double", "torch")({"x": x})["y"]
    assert y.dtype == torch.float32 and torch.equal(y, torch.full((2, 3), 2.0))


def test_a_user_functions_mistakes_on_torch_tensors_are_named(module: str) -> None:
    x = torch.ones((2, 3))
    with pytest.raises(UserFunctionError, match=r"output 'y' is complex64, declared float32"):
        user(module, "wrong_dtype", "torch")({"x": x})
    with pytest.raises(UserFunctionError, match=r"has shape \(3,\); declared \(batch, 3\)"):
        user(module, "wrong_rank", "torch")({"x": x})


def test_checked_outputs_takes_numpy_or_torch_onto_the_device() -> None:
    out = checked_outputs(
        "m:f", {"y": np.zeros((1, 3), np.float16), "z": torch.zeros(1, 2)}, OUT, "cpu"
    )
    assert set(out) == {"y"} and out["y"].dtype == torch.float32 and out["y"].device.type == "cpu"
    with pytest.raises(UserFunctionError, match="not a dict"):
        checked_outputs("m:f", [np.zeros((1, 3))], OUT)


def test_postprocess_params_refuse_an_unknown_kind_of_tensors() -> None:
    with pytest.raises(ValueError, match="choose from numpy, torch"):
        PostprocessParams("m:f", tensors="jax")  # type: ignore[arg-type]


PYTHON_FILE = f"""
name: emb
model: {{onnx: embedder.onnx}}
input: {{size: [{SIZE}, {SIZE}]}}
postprocess:
  kind: python
  function: user_torch_post:torch_double
  outputs: [{{name: y, dtype: float32, dims: [-1]}}]
"""


def test_a_pipeline_file_asks_for_torch_tensors_and_an_unknown_value_is_refused(
    tmp_path: Path, module: str
) -> None:
    export_onnx(embedder(), tmp_path / "embedder.onnx", INPUT, OUTPUTS["embedder"])
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(PYTHON_FILE + "  tensors: torch\n"))
    _, (spec,) = file_specs(path)
    assert spec.stage_by_role("postprocess").params_as(PostprocessParams).tensors == "torch"
    path.write_text(textwrap.dedent(PYTHON_FILE))
    _, (spec,) = file_specs(path)
    assert spec.stage_by_role("postprocess").params_as(PostprocessParams).tensors == "numpy"
    path.write_text(textwrap.dedent(PYTHON_FILE + "  tensors: jax\n"))
    with pytest.raises(
        PipelineFileError, match=r"postprocess.tensors: expected one of numpy, torch"
    ):
        load_file(path)
