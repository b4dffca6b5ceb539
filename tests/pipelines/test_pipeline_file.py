"""Pipeline files: the shipped ones are the catalog, and every kind of bad file fails at
``cvserve repo build`` with one line naming the file, the field and the cause."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from own_models import INPUT, OUTPUTS, SIZE, embedder, export_onnx, export_torchscript, segmenter

from cvserve.models.params import PostprocessParams
from cvserve.models.postprocessor import Postprocessor, UserFunctionError
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.catalog import COMPOSITES, PIPELINES, file_specs, image_pipeline, pipeline
from cvserve.pipelines.pipeline_file import PipelineFileError, load_file, shipped_files
from cvserve.pipelines.spec import TensorSpec


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("files")
    export_onnx(embedder(), root / "embedder.onnx", INPUT, OUTPUTS["embedder"])
    export_torchscript(segmenter(), root / "segmenter.pt")
    return root


GOOD = f"""
name: emb
model: {{onnx: embedder.onnx}}
input: {{size: [{SIZE}, {SIZE}]}}
postprocess: {{kind: embedding}}
"""


def write(folder: Path, text: str, name: str = "p.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def build_error(folder: Path, text: str) -> str:
    """The one line ``cvserve repo build --file`` exits with for this file."""
    path = write(folder, text)
    with pytest.raises(SystemExit) as exc:
        main(["repo", "build", "--file", str(path), "--out", str(folder / "repo")])
    message = str(exc.value.code)
    assert message.startswith(f"cvserve repo build: {path}: ") and "\n" not in message
    return message.split(f"{path}: ", 1)[1]


def test_the_shipped_files_are_the_catalog() -> None:
    assert set(shipped_files()) == {*PIPELINES, *COMPOSITES}
    assert set(PIPELINES) == {"classify", "segment", "detect", "depth", "identify"}
    assert COMPOSITES["detect_identify"].parts == ("detect", "identify")
    # A shipped file builds the same spec as the builder it declares.
    assert pipeline("classify") == image_pipeline("classify", "resnet50", top_k=5)
    assert pipeline("detect", max_detections=3) == image_pipeline(
        "detect", score_threshold=0.3, max_detections=3
    )


def test_a_good_file_builds_and_its_repository_is_written(folder: Path) -> None:
    path = write(folder, GOOD)
    assert main(["repo", "build", "--file", str(path), "--out", str(folder / "ok")]) == 0
    assert (folder / "ok" / "emb_dnn" / "1" / "embedder.onnx").is_file()  # copied, relative
    _, (spec,) = file_specs(path)
    assert spec.stage_by_role("inference").inputs[0].dims == (3, SIZE, SIZE)


@pytest.mark.parametrize(
    ("text", "field", "cause"),
    [
        (GOOD.replace("input:", "inptu:"), "inptu", "unknown field; expected one of: name"),
        (GOOD + "serving: {max_batch_size: eight}\n", "serving.max_batch_size", "positive integer"),
        (GOOD.replace("embedder.onnx", "missing.onnx"), "model.onnx", "file not found"),
        (GOOD.replace(f"[{SIZE}, {SIZE}]", "[128, 128]"), "input.size", "(dim 2: 96, not 128)"),
        (
            GOOD.replace(f"{{size: [{SIZE}, {SIZE}]}}", f"{{size: [{SIZE}, {SIZE}], layout: HWC}}"),
            "input.layout",
            "the model's input 'input.1' is ?x3x96x96",
        ),
        (
            GOOD.replace("{kind: embedding}", "{kind: embedding, output: logits}"),
            "postprocess.output",
            "the model has no output 'logits' ('emb/0')",
        ),
        (
            GOOD.replace("{kind: embedding}", "{kind: classification, labels: labels.txt}"),
            "postprocess.labels",
            "file not found",
        ),
        (
            GOOD.replace("{kind: embedding}", "{kind: segmentation}"),
            "postprocess.output",
            "expects class logits (N, C, H, W); the model's output 'emb/0' is ?x16",
        ),
        (
            GOOD.replace(f"{{size: [{SIZE}, {SIZE}]}}", f"{{size: [{SIZE}, {SIZE}], dtype: int8}}"),
            "input.dtype",
            "expected one of float32, float16",
        ),
        (
            GOOD.replace("{onnx: embedder.onnx}", "{onnx: embedder.onnx, arch: resnet50}"),
            "model",
            "exactly one of arch, onnx, torchscript, triton",
        ),
        (
            GOOD.replace("{onnx: embedder.onnx}", "{torchscript: segmenter.pt}").replace(
                "{kind: embedding}", "{kind: depth}"
            ),
            "postprocess.output",
            "expects (N, 1, H, W)",
        ),
        ("name: [x\n", "", "not valid YAML"),
        (GOOD.replace("name: emb", "name: my model"), "name", "letters, digits, _ or -"),
        (
            GOOD.replace(
                "{kind: embedding}",
                "{kind: python, function: nomodule, outputs: [{name: y, dtype: int64, dims: [1]}]}",
            ),
            "postprocess.function",
            "expected module:function",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_each_kind_of_bad_file_fails_at_repo_build_naming_field_and_cause(
    folder: Path, text: str, field: str, cause: str
) -> None:
    message = build_error(folder, text)
    if field:
        assert message.startswith(f"{field}: "), message
    assert cause in message, message


def test_a_dtype_the_model_does_not_take_names_both_sides(folder: Path) -> None:
    text = GOOD.replace(
        f"{{size: [{SIZE}, {SIZE}]}}", f"{{size: [{SIZE}, {SIZE}], dtype: float16}}"
    )
    message = build_error(folder, text)
    assert message == "input.dtype: float16 declared; the model's input 'input.1' is float32"


def test_a_composite_with_a_bad_stage_names_the_stage(folder: Path) -> None:
    text = """
    name: two
    composite:
      - pipeline: nowhere.yaml
      - pipeline: identify
    """
    with pytest.raises(PipelineFileError, match=r"composite\[0\]\.pipeline: no pipeline file"):
        load_file(write(folder, text, "two.yaml"))


def test_the_command_line_prints_one_line_and_exits_1_without_a_traceback(folder: Path) -> None:
    path = write(folder, GOOD.replace("embedder.onnx", "gone.onnx"), "gone.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "cvserve.pipelines.app.cli", "repo", "build", "--file", str(path),
         "--out", str(folder / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "model.onnx: file not found" in result.stderr


def test_a_user_function_is_testable_without_triton_and_its_mistakes_are_named(
    tmp_path: Path,
) -> None:
    (tmp_path / "post.py").write_text(
        "import numpy as np\n"
        "def double(t, factor=2):\n    return {'y': t['x'] * factor}\n"
        "def wrong(t):\n    return {'z': t['x']}\n"
    )
    outputs = [TensorSpec("y", "float32", (3,))]
    x = np.ones((2, 3), np.float32)
    ok = Postprocessor(
        PostprocessParams("post:double", {"factor": 3}, str(tmp_path)), ["x"], outputs
    )
    np.testing.assert_array_equal(ok({"x": x})["y"], 3 * x)
    wrong = Postprocessor(PostprocessParams("post:wrong", {}, str(tmp_path)), ["x"], outputs)
    with pytest.raises(
        UserFunctionError, match=r"post:wrong returned no 'y' \(it returned \['z'\]\)"
    ):
        wrong({"x": x})
    with pytest.raises(UserFunctionError, match="cannot import post:absent"):
        Postprocessor(PostprocessParams("post:absent", {}, str(tmp_path)), ["x"], outputs)
