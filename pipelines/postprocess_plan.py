"""The postprocess stage a pipeline file declares for a model it does not know: which of the
model's outputs each postprocess kind reads, checked against their shapes, and what it answers.
A disagreement is a `PipelineFileError` naming the file's field and the model's side."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cvserve.models.contract import ModelContract, ModelTensor
from cvserve.models.params import PostprocessParams
from cvserve.pipelines.model_reading import shape_text, tensor_spec
from cvserve.pipelines.pipeline_file import PipelineFile
from cvserve.pipelines.spec import TensorSpec
from cvserve.preprocess.spec import PreprocessSpec
from cvserve.preprocess.tensors import BOXES, COUNT, DEPTH, EMBEDDING, LABELS, MASK, SCORES, SIZE

DEFAULT_TOP_K = 5
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_MAX_DETECTIONS = 20
# A postprocess stage: its inputs, params and outputs.
PostPlan = tuple[tuple[TensorSpec, ...], PostprocessParams, tuple[TensorSpec, ...]]


def _output(pf: PipelineFile, contract: ModelContract, field: str = "output") -> ModelTensor:
    """The model output a postprocess option names (or the only one)."""
    options = pf.postprocess.options
    names = ", ".join(repr(n) for n in contract.output_names)
    if field in options:
        try:
            return contract.output(options[field])
        except KeyError:
            raise pf.error(
                f"postprocess.{field}", f"the model has no output {options[field]!r} ({names})"
            ) from None
    if len(contract.outputs) != 1:
        raise pf.error(f"postprocess.{field}", f"the model has several outputs ({names}): name one")
    return contract.outputs[0]


def _named_output(pf: PipelineFile, contract: ModelContract, role: str) -> ModelTensor:
    names = ", ".join(repr(n) for n in contract.output_names)
    wanted = pf.postprocess.options.get("outputs", {}).get(role)
    if wanted is None:
        raise pf.error(f"postprocess.outputs.{role}", f"needed: which output holds the {role}")
    try:
        return contract.output(wanted)
    except KeyError:
        raise pf.error(
            f"postprocess.outputs.{role}", f"the model has no output {wanted!r} ({names})"
        ) from None


def _expect(pf: PipelineFile, field: str, tensor: ModelTensor, ok: bool, wanted: str) -> None:
    if not ok:
        raise pf.error(
            field, f"expects {wanted}; the model's output {tensor.name!r} is {shape_text(tensor)}"
        )


def _at_input_resolution(pf: PipelineFile, tensor: ModelTensor, pre: PreprocessSpec) -> None:
    if pre.dynamic:  # both follow the image; META maps the map back
        return
    h, w = tensor.dims[-2:]
    if (h > 0 and h != pre.crop[0]) or (w > 0 and w != pre.crop[1]):
        raise pf.error(
            "postprocess.output",
            f"maps are taken back to the original image from the input's {pre.crop[0]}x"
            f"{pre.crop[1]}; the model's output {tensor.name!r} is {shape_text(tensor)}",
        )


def _labels(pf: PipelineFile, classes: int) -> tuple[str, ...] | None:
    path = pf.postprocess.options.get("labels")
    if path is None:
        return None
    names = tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    if classes > 0 and len(names) != classes:
        raise pf.error(
            "postprocess.labels",
            f"{path} has {len(names)} labels; the model scores {classes} classes",
        )
    return names


def _detection_keywords(pf: PipelineFile, pre: PreprocessSpec, yolo: bool) -> dict[str, Any]:
    o = pf.postprocess.options
    nms = o.get("nms", yolo)
    if pre.dynamic and o.get("normalized"):
        raise pf.error(
            "postprocess.normalized",
            "boxes normalised to a dynamic input size cannot be mapped back: give them in pixels",
        )
    return {
        "score_threshold": o.get("score_threshold", DEFAULT_SCORE_THRESHOLD),
        "max_detections": o.get("max_detections", DEFAULT_MAX_DETECTIONS),
        "iou_threshold": o.get("iou_threshold", 0.45) if nms else None,
        "box_format": o.get("box_format", "cxcywh" if yolo else "xyxy"),
        "normalized": o.get("normalized", False),
        "input_size": list(pre.crop),
        "class_agnostic": o.get("class_agnostic", False),
        **(
            {"anchors_last": o.get("anchors_last", True), "objectness": o.get("objectness", False)}
            if yolo
            else {}
        ),
    }


def _detection_outputs(max_detections: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(BOXES, "float32", (max_detections, 4)),
        TensorSpec(SCORES, "float32", (max_detections,)),
        TensorSpec(LABELS, "int64", (max_detections,)),
        TensorSpec(COUNT, "int32", (1,)),
    )


def postprocess_plan(
    pf: PipelineFile, contract: ModelContract, pre: PreprocessSpec, meta: TensorSpec
) -> PostPlan | None:
    """(stage inputs, params, outputs) of the postprocess stage the file declares, checked
    against the model's outputs; None for ``raw`` (no stage: the model's outputs are the
    pipeline's)."""
    kind, o = pf.postprocess.kind, pf.postprocess.options
    spec = {t.name: tensor_spec(pf, t) for t in contract.outputs}
    if kind == "raw":
        for name in o.get("outputs", []):
            if name not in spec:
                raise pf.error(
                    "postprocess.outputs", f"the model has no output {name!r} ({list(spec)})"
                )
        return None
    if kind == "classification":
        out = _output(pf, contract)
        classes = math.prod(out.dims) if all(d > 0 for d in out.dims) else -1
        squeezable = sum(d != 1 for d in out.dims) <= 1
        _expect(pf, "postprocess.output", out, squeezable, "class scores (N, C)")
        k = o.get("top_k", DEFAULT_TOP_K)
        params = PostprocessParams(
            "top_k",
            keywords={"k": k, "softmax": o.get("softmax", True)},
            labels=_labels(pf, classes),
        )
        k = min(k, classes) if classes > 0 else k
        outputs = (TensorSpec(LABELS, "int64", (k,)), TensorSpec(SCORES, "float32", (k,)))
        return (spec[out.name],), params, outputs
    if kind == "detection":
        head = o.get("head", "yolo" if "output" in o or "outputs" not in o else "boxes")
        keywords = _detection_keywords(pf, pre, yolo=head == "yolo")
        labels = _labels(pf, -1)
        outputs = _detection_outputs(keywords["max_detections"])
        if head == "yolo":
            out = _output(pf, contract)
            attributes = out.dims[0 if keywords["anchors_last"] else -1] if out.dims else -1
            need = 6 if keywords["objectness"] else 5
            _expect(
                pf,
                "postprocess.output",
                out,
                len(out.dims) == 2 and (attributes < 0 or attributes >= need),
                f"a raw head (N, 4 + classes{', objectness' if need == 6 else ''}, anchors)"
                + ("" if keywords["anchors_last"] else " transposed (anchors_last: false)"),
            )
            params = PostprocessParams("yolo_detections", keywords=keywords, labels=labels)
            return (spec[out.name], meta), params, outputs
        boxes = _named_output(pf, contract, "boxes")
        scores = _named_output(pf, contract, "scores")
        classes_out = _named_output(pf, contract, "classes")
        ok = len(boxes.dims) == 2 and boxes.dims[-1] in (4, -1)
        _expect(pf, "postprocess.outputs.boxes", boxes, ok, "boxes (N, K, 4)")
        for role, tensor in (("scores", scores), ("classes", classes_out)):
            _expect(pf, f"postprocess.outputs.{role}", tensor, len(tensor.dims) == 1, "(N, K)")
        inputs = [spec[boxes.name], spec[scores.name], spec[classes_out.name], meta]
        if "count" in o.get("outputs", {}):
            inputs.append(spec[_named_output(pf, contract, "count").name])
        params = PostprocessParams("box_detections", keywords=keywords, labels=labels)
        return tuple(inputs), params, outputs
    if kind in ("segmentation", "depth"):
        out = _output(pf, contract)
        sigmoid = kind == "segmentation" and o.get("activation") == "sigmoid"
        if kind == "depth":
            ok = len(out.dims) == 3 and out.dims[0] in (1, -1)
            wanted, function = "(N, 1, H, W)", "depth_maps"
        elif sigmoid:
            ok = len(out.dims) == 2 or (len(out.dims) == 3 and out.dims[0] in (1, -1))
            wanted, function = "one map (N, 1, H, W) or (N, H, W)", "sigmoid_masks"
        else:
            ok = len(out.dims) == 3
            wanted, function = "class logits (N, C, H, W)", "segmentation_masks"
        _expect(pf, "postprocess.output", out, ok, wanted)
        _at_input_resolution(pf, out, pre)
        keywords = {"threshold": o.get("threshold", 0.5)} if sigmoid else {}
        classes = out.dims[0] if kind == "segmentation" and not sigmoid else -1
        params = PostprocessParams(function, keywords=keywords, labels=_labels(pf, classes))
        first = (
            TensorSpec(DEPTH, "float16", (-1, -1))
            if kind == "depth"
            else TensorSpec(MASK, "uint8", (-1, -1))
        )
        return (spec[out.name], meta), params, (first, TensorSpec(SIZE, "int32", (2,)))
    if kind == "embedding":
        out = _output(pf, contract)
        function = "l2_normalize" if o.get("normalize", True) else "flat_float32"
        return (
            (spec[out.name],),
            PostprocessParams(function),
            (TensorSpec(EMBEDDING, "float32", (-1,)),),
        )
    # python: the user's function gets every model output (and META), returns the declared.
    outputs = tuple(TensorSpec(d["name"], d["dtype"], tuple(d["dims"])) for d in o["outputs"])
    inputs = (*spec.values(), meta) if o.get("with_meta", True) else tuple(spec.values())
    params = PostprocessParams(
        o["function"],
        keywords=dict(o.get("options", {})),
        path=o["path"],
        tensors=o.get("tensors", "numpy"),
    )
    return inputs, params, outputs
