"""The postprocess stage a file declares for a model cvserve did not build
(`pipelines.postprocess_plan`): the outputs each kind reads, checked, and what it answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvserve.models.contract import ModelContract, ModelTensor
from cvserve.pipelines.builders import preprocess_outputs
from cvserve.pipelines.model_reading import preprocess_from
from cvserve.pipelines.pipeline_file import (
    InputDecl,
    ModelDecl,
    PipelineFile,
    PipelineFileError,
    PostprocessDecl,
)
from cvserve.pipelines.postprocess_plan import postprocess_plan
from cvserve.preprocess.tensors import BOXES, COUNT, EMBEDDING, LABELS, META, SCORES

PRE = preprocess_from(InputDecl(), (224, 224), "cpu")
_, META_SPEC = preprocess_outputs(PRE)


def plan(kind: str, tensors: tuple[ModelTensor, ...], **options):
    pf = PipelineFile("mine", ModelDecl("onnx", path="m.onnx"), PostprocessDecl(kind, options))
    contract = ModelContract((ModelTensor("input.1", "float32", (-1, 3, 224, 224)),), tensors)
    return postprocess_plan(pf, contract, PRE, META_SPEC)


def test_classification_reads_the_scores_and_answers_at_most_the_classes() -> None:
    inputs, params, outputs = plan("classification", (ModelTensor("logits", "float32", (-1, 3)),))
    assert [t.name for t in inputs] == ["logits"] and params.function == "top_k"
    assert [(t.name, t.dims) for t in outputs] == [(LABELS, (3,)), (SCORES, (3,))]  # top 5 of 3
    with pytest.raises(PipelineFileError, match="postprocess.output: expects class scores"):
        plan("classification", (ModelTensor("map", "float32", (-1, 3, 7, 7)),))


def test_classification_labels_must_match_the_classes(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    with pytest.raises(PipelineFileError, match="has 2 labels; the model scores 3 classes"):
        plan("classification", (ModelTensor("logits", "float32", (-1, 3)),), labels=str(labels))


def test_a_detector_with_box_outputs_names_each_and_gets_meta() -> None:
    outputs = (
        ModelTensor("b", "float32", (-1, 100, 4)),
        ModelTensor("s", "float32", (-1, 100)),
        ModelTensor("c", "int64", (-1, 100)),
    )
    roles = {"boxes": "b", "scores": "s", "classes": "c"}
    inputs, params, answers = plan("detection", outputs, outputs=roles, max_detections=7)
    assert [t.name for t in inputs] == ["b", "s", "c", META] and params.function == "box_detections"
    expected = [(BOXES, 7), (SCORES, 7), (LABELS, 7), (COUNT, 1)]
    assert [(t.name, t.dims[0]) for t in answers] == expected
    with pytest.raises(PipelineFileError, match="postprocess.outputs.classes: needed"):
        plan("detection", outputs, outputs={"boxes": "b", "scores": "s"})
    with pytest.raises(PipelineFileError, match="the model has no output 'x'"):
        plan("detection", outputs, outputs={**roles, "scores": "x"})


def test_a_segmenter_must_answer_at_the_input_resolution() -> None:
    good = (ModelTensor("masks", "float32", (-1, 21, 224, 224)),)
    assert plan("segmentation", good)[1].function == "segmentation_masks"
    with pytest.raises(PipelineFileError, match="postprocess.output: maps are taken back"):
        plan("segmentation", (ModelTensor("masks", "float32", (-1, 21, 56, 56)),))


def test_raw_passes_outputs_on_and_checks_their_names() -> None:
    outputs = (ModelTensor("emb", "float32", (-1, 128)),)
    assert plan("raw", outputs, outputs=["emb"]) is None
    with pytest.raises(PipelineFileError, match="postprocess.outputs: the model has no output 'z'"):
        plan("raw", outputs, outputs=["z"])
    (inputs, params, answers) = plan("embedding", outputs)
    assert params.function == "l2_normalize" and [t.name for t in answers] == [EMBEDDING]
