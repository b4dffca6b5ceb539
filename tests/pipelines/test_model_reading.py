"""A file's model checked against its declared preprocessing (`pipelines.model_reading`): what
the declaration makes, and each disagreement named by the file's field and the model's side."""

from __future__ import annotations

import pytest

from cvserve.models.contract import ModelTensor
from cvserve.pipelines.model_reading import check_input, preprocess_from, shape_text
from cvserve.pipelines.pipeline_file import (
    InputDecl,
    ModelDecl,
    PipelineFile,
    PipelineFileError,
    PostprocessDecl,
)
from cvserve.preprocess.spec import IMAGENET_MEAN, IMAGENET_STD

FILE = PipelineFile("mine", ModelDecl("onnx", path="m.onnx"), PostprocessDecl("raw"))


def test_an_input_declaration_fills_what_it_leaves_out() -> None:
    pre = preprocess_from(InputDecl(), (224, 224), "cpu")
    assert (pre.resize_mode, pre.crop, pre.resize_shorter) == ("shorter_crop", (224, 224), 256)
    assert (pre.mean, pre.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert (pre.layout, pre.dtype) == ("CHW", "float32")
    scaled = preprocess_from(InputDecl(scale=1 / 255, layout="HWC"), (320, 240), "gpu")
    assert scaled.std == pytest.approx((255.0,) * 3) and scaled.mean == (0.0, 0.0, 0.0)
    assert (scaled.output_shape, scaled.device) == ((320, 240, 3), "gpu")


def test_shape_text_marks_dynamic_dimensions() -> None:
    assert shape_text(ModelTensor("x", "float32", (-1, 3, 224, -1))) == "?x3x224x?"


@pytest.mark.parametrize(
    ("shape", "dtype", "field", "says"),
    [
        ((-1, 3, 224), "float32", "input", "3-D"),
        ((8, 3, 224, 224), "float32", "input", "fixed batch of 8"),
        ((-1, 3, 256, 224), "float32", "input.size", "dim 2: 256, not 224"),
        ((-1, 224, 224, 3), "float32", "input.layout", "dim 1: 224, not 3"),
        ((-1, 3, 224, 224), "float16", "input.dtype", "float32 declared"),
    ],
)
def test_each_disagreement_names_its_field(
    shape: tuple[int, ...], dtype: str, field: str, says: str
) -> None:
    pre = preprocess_from(InputDecl(), (224, 224), "cpu")
    with pytest.raises(PipelineFileError, match=f"^mine: {field}: .*{says}"):
        check_input(FILE, ModelTensor("input.1", dtype, shape), pre)


def test_a_dynamic_input_takes_the_declared_size() -> None:
    pre = preprocess_from(InputDecl(), (224, 224), "cpu")
    check_input(FILE, ModelTensor("input.1", "float32", (-1, 3, -1, -1)), pre)  # no error
    dynamic = preprocess_from(InputDecl(resize="dynamic"), (224, 224), "cpu")
    with pytest.raises(PipelineFileError, match="input.resize: dynamic gives each image"):
        check_input(FILE, ModelTensor("input.1", "float32", (-1, 3, 224, 224)), dynamic)
