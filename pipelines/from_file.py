"""A `PipelineFile` → its `PipelineSpec`, checked against the model before anything is served:
the only way a spec is made. Command-line options override file fields through `with_options`
(`PIPELINE_OPTIONS`); a task's pipeline without a file of its own is `task_file`'s.

An ``arch`` model builds its task's stages (`builders.TASKS`; the catalog's pipelines are such
files). A model file or a model in the user's Triton repository is read first
(`models.contract`): the input tensor's name, dtype, layout and size must agree with the declared
preprocessing, and every output postprocessing names must exist with a shape it can take. A
disagreement is a `PipelineFileError` naming the file's field and the model's side.

Tensor names are the model's own (``input.1``, ``logits/Softmax:0``): the preprocess stage's
pixels output is named as the model's input, the DNN stage's outputs as the model's outputs.

The serving machine's cores are an argument (``cores``; `catalog.resolve` passes its `Host`'s):
nothing here reads the machine this runs on.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from cvserve.models.architectures import architecture
from cvserve.models.contract import (
    ContractError,
    ModelContract,
    ModelTensor,
    read_onnx,
    read_torchscript,
)
from cvserve.models.fusion import NotFusable, fuse_stages
from cvserve.models.params import (
    ENGINES_FOR,
    DnnParams,
    PostprocessParams,
    TritonModelParams,
    precision_refused,
)
from cvserve.models.repository.config import read_config
from cvserve.pipelines.builders import (
    ADAPTERS,
    CROP_RATIO,
    TASKS,
    dnn_stage,
    preprocess_outputs,
    preprocess_spec_for,
    preprocess_stage,
    serving_plan,
)
from cvserve.pipelines.pipeline_file import (
    CompositeFile,
    InputDecl,
    ModelDecl,
    PipelineFile,
    PipelineFileError,
    PostprocessDecl,
)
from cvserve.pipelines.spec import (
    CompositeSpec,
    CompositeStage,
    CropFanOut,
    PipelineSpec,
    StageSpec,
    TensorSpec,
    dtype_from_triton,
)
from cvserve.preprocess.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LETTERBOX_GREY,
    PreprocessParams,
    PreprocessSpec,
)
from cvserve.preprocess.tensors import BOXES, COUNT, EMBEDDING, LABELS, MASK, META, SCORES, SIZE

# A postprocess kind → the `builders.TASKS` task of an arch model, and the arch's task.
ARCH_TASKS: dict[str, tuple[str, str]] = {
    "classification": ("classify", "classification"),
    "segmentation": ("segment", "segmentation"),
    "detection": ("detect", "detection"),
    "depth": ("depth", "depth"),
    "embedding": ("identify", "identification"),
}
# The engines each kind of model can run on (`models.runners`), its own first.
ENGINES_BY_KIND: dict[str, tuple[str, ...]] = {**ENGINES_FOR, "triton": ("triton",)}
DEFAULT_TOP_K = 5
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_MAX_DETECTIONS = 20

# The file fields a command line overrides (`with_options`), by section; ``name`` renames the
# pipeline and ``preprocess`` replaces an arch model's preprocessing (`build_spec`).
MODEL_OPTIONS = ("arch", "weights", "seed", "num_classes")
SERVING_OPTIONS = (
    "device",
    "max_batch_size",
    "instances",
    "torch_threads",
    "dali_threads",
    "max_queue_delay_us",
    "preferred_batch_sizes",
    "engine",
    "precision",
    "fuse_stages",
)
POSTPROCESS_OPTIONS = ("top_k", "score_threshold", "max_detections")
PIPELINE_OPTIONS: frozenset[str] = frozenset(
    (*MODEL_OPTIONS, *SERVING_OPTIONS, *POSTPROCESS_OPTIONS, "name", "preprocess")
)


def _error(pf: PipelineFile, field: str, message: str) -> PipelineFileError:
    return PipelineFileError(f"{pf.source or pf.name}: {field}: {message}")


def _shape(tensor: ModelTensor) -> str:
    return "x".join("?" if d < 0 else str(d) for d in tensor.shape)


# --- overrides (CLI options) ------------------------------------------------------------------


def task_file(task: str) -> PipelineFile:
    """The file of ``task``'s pipeline (`builders.TASKS`) around its default network, as
    written with nothing but its model and postprocessing kind."""
    kind = next(k for k, (t, _) in ARCH_TASKS.items() if t == task)
    return PipelineFile(
        name=task,
        model=ModelDecl("arch", arch=TASKS[task].default_arch),
        postprocess=PostprocessDecl(kind),
    )


def with_options(pf: PipelineFile, **options: Any) -> PipelineFile:
    """``pf`` with the pipeline options a command line gives (`PIPELINE_OPTIONS`; None: as the
    file says). ``preprocess`` is not a file field: see `build_spec`."""
    options = {k: v for k, v in options.items() if v is not None}
    model, serving, post = pf.model, pf.serving, dict(pf.postprocess.options)
    for key in MODEL_OPTIONS:
        if key in options:
            if model.kind != "arch":
                raise _error(
                    pf, f"model.{key}", f"given as an option, but the model is {model.kind}"
                )
            model = dataclasses.replace(model, **{key: options[key]})
    serving = dataclasses.replace(
        serving, **{k: options[k] for k in SERVING_OPTIONS if k in options}
    )
    kind = pf.postprocess.kind
    if "top_k" in options and kind == "classification":
        post["top_k"] = options["top_k"]
    for key in ("score_threshold", "max_detections"):
        if key in options and kind == "detection":
            post[key] = options[key]
    return dataclasses.replace(
        pf,
        name=options.get("name", pf.name),
        model=model,
        serving=serving,
        postprocess=dataclasses.replace(pf.postprocess, options=post),
    )


# --- preprocessing ------------------------------------------------------------------------------


def preprocess_from(
    decl: InputDecl, size: tuple[int, int], device: str, base: PreprocessSpec | None = None
) -> PreprocessSpec:
    """The `PreprocessSpec` an input declaration describes for a model input of ``size``
    (H, W); unset fields from ``base`` (an architecture's), else the defaults: shorter-side
    resize + centre crop, ImageNet mean/std, RGB, CHW, float32."""
    resize = decl.resize or (base.resize_mode if base else "shorter_crop")
    if decl.scale is not None:
        std = (1.0 / decl.scale,) * 3
        mean = decl.mean or (0.0, 0.0, 0.0)
    else:
        std = decl.std or (base.std if base else IMAGENET_STD)
        mean = decl.mean or (base.mean if base else IMAGENET_MEAN)
    shorter = decl.resize_shorter or (
        base.resize_shorter if base and base.crop == size else round(min(size) * CROP_RATIO)
    )
    return PreprocessSpec(
        resize_mode=resize,  # type: ignore[arg-type]
        resize_shorter=shorter,
        crop=size,
        mean=mean,
        std=std,
        antialias=decl.antialias,
        dtype=decl.dtype,  # type: ignore[arg-type]
        pad_value=decl.pad_value or LETTERBOX_GREY,
        layout=decl.layout,  # type: ignore[arg-type]
        channels=decl.channels,  # type: ignore[arg-type]
        device=device,  # type: ignore[arg-type]
        multiple_of=decl.multiple_of or 32,
    )


def _model_size(pf: PipelineFile, tensor: ModelTensor) -> tuple[int, int] | None:
    """(H, W) a 4-D image input fixes, or None where it leaves them dynamic."""
    dims = tensor.dims
    h, w = (dims[1], dims[2]) if pf.input.layout == "CHW" else (dims[0], dims[1])
    return (h, w) if h > 0 and w > 0 else None


def check_input(pf: PipelineFile, tensor: ModelTensor, pre: PreprocessSpec) -> None:
    """The model's input ``tensor`` takes what ``pre`` makes, or a `PipelineFileError`."""
    where = "input"
    if len(tensor.shape) != 4:
        raise _error(
            pf,
            where,
            f"the model's input {tensor.name!r} is {_shape(tensor)} ({len(tensor.shape)}-D); "
            "cvserve feeds images as a 4-D batch (N, 3, H, W) or (N, H, W, 3)",
        )
    if tensor.shape[0] > 0:
        raise _error(
            pf,
            where,
            f"the model's input {tensor.name!r} has a fixed batch of {tensor.shape[0]} "
            f"({_shape(tensor)}): export it with a dynamic batch axis so Triton can batch it",
        )
    if pre.dynamic and _model_size(pf, tensor) is not None:
        raise _error(
            pf,
            "input.resize",
            f"dynamic gives each image its own size; the model's input {tensor.name!r} is "
            f"{_shape(tensor)}: use a fixed size",
        )
    dims = zip(("dim 1", "dim 2", "dim 3"), tensor.dims, pre.output_shape, strict=True)
    for what, got, want in dims:
        if got > 0 and want > 0 and got != want:
            declared = f"layout {pre.layout}, size {list(pre.crop)}"
            raise _error(
                pf,
                "input.layout" if 3 in (got, want) else "input.size",
                f"{declared} makes (N, {', '.join(map(str, pre.output_shape))}); the model's "
                f"input {tensor.name!r} is {_shape(tensor)} ({what}: {got}, not {want})",
            )
    if tensor.dtype != pre.dtype:
        raise _error(
            pf,
            "input.dtype",
            f"{pre.dtype} declared; the model's input {tensor.name!r} is {tensor.dtype}",
        )


# --- the model -----------------------------------------------------------------------------------


def read_triton_model(pf: PipelineFile) -> tuple[ModelContract, int]:
    """Inputs, outputs and max batch size of the user's Triton model, from its config.pbtxt."""
    model = pf.model
    path = Path(str(model.repository)) / str(model.name) / "config.pbtxt"
    if not path.is_file():
        raise _error(pf, "model.triton", f"no {path}: the model's folder needs its config.pbtxt")
    config = read_config(path)
    batch = (-1,) if config.max_batch_size > 0 else ()

    def tensors(items: Any) -> tuple[ModelTensor, ...]:
        from tritonclient.grpc import model_config_pb2 as mc

        return tuple(
            ModelTensor(
                t.name,
                dtype_from_triton(mc.DataType.Name(t.data_type)),
                (*batch, *t.dims),
            )
            for t in items
        )

    return ModelContract(tensors(config.input), tensors(config.output)), config.max_batch_size


def _input_tensor(pf: PipelineFile, contract: ModelContract) -> ModelTensor:
    if pf.input.tensor is not None:
        for tensor in contract.inputs:
            if tensor.name == pf.input.tensor:
                return tensor
        names = ", ".join(repr(t.name) for t in contract.inputs)
        raise _error(pf, "input.tensor", f"the model has no input {pf.input.tensor!r} ({names})")
    if len(contract.inputs) != 1:
        names = ", ".join(repr(t.name) for t in contract.inputs)
        raise _error(pf, "input.tensor", f"the model has several inputs ({names}): name one")
    return contract.inputs[0]


def _tensor_spec(pf: PipelineFile, tensor: ModelTensor) -> TensorSpec:
    try:
        return TensorSpec(tensor.name, tensor.dtype, tensor.dims)
    except ValueError as exc:
        raise _error(pf, "model", f"output {tensor.name!r}: {exc}") from exc


def _read_model(pf: PipelineFile, device: str) -> tuple[ModelContract, PreprocessSpec, int]:
    """The model's contract, the preprocessing it gets, and its own max batch size (0: none
    imposed), checked against each other."""
    model = pf.model
    own_batch = 0
    try:
        if model.kind == "onnx":
            contract = read_onnx(Path(str(model.path)))
        elif model.kind == "triton":
            contract, own_batch = read_triton_model(pf)
        else:
            contract = None
    except ContractError as exc:
        raise _error(pf, f"model.{model.kind}", str(exc)) from exc
    if contract is not None:
        tensor = _input_tensor(pf, contract)
        if len(tensor.shape) != 4:
            check_input(pf, tensor, preprocess_from(pf.input, (1, 1), device))
        size = pf.input.size or _model_size(pf, tensor)
        if size is None:
            raise _error(
                pf,
                "input.size",
                f"needed: the model's input {tensor.name!r} is {_shape(tensor)} (dynamic)",
            )
        pre = preprocess_from(pf.input, size, device)
        check_input(pf, tensor, pre)
        return contract, pre, own_batch
    # TorchScript: run it once on the declared input to see what it returns.
    if pf.input.size is None:
        raise _error(pf, "input.size", "needed for a TorchScript model ([height, width])")
    pre = preprocess_from(pf.input, pf.input.size, device)
    m = pre.multiple_of
    example_size = tuple((s + m - 1) // m * m for s in pre.crop) if pre.dynamic else pre.crop
    example_shape = (3, *example_size) if pre.layout == "CHW" else (*example_size, 3)
    example = np.zeros((2, *example_shape), pre.dtype)
    try:
        contract = read_torchscript(Path(str(model.path)), example, pf.input.tensor or "INPUT__0")
    except ContractError as exc:
        raise _error(pf, "model.torchscript", str(exc)) from exc
    return contract, pre, own_batch


# --- postprocessing ------------------------------------------------------------------------------


def _output(pf: PipelineFile, contract: ModelContract, field: str = "output") -> ModelTensor:
    """The model output a postprocess option names (or the only one)."""
    options = pf.postprocess.options
    names = ", ".join(repr(n) for n in contract.output_names)
    if field in options:
        try:
            return contract.output(options[field])
        except KeyError:
            raise _error(
                pf, f"postprocess.{field}", f"the model has no output {options[field]!r} ({names})"
            ) from None
    if len(contract.outputs) != 1:
        raise _error(
            pf, f"postprocess.{field}", f"the model has several outputs ({names}): name one"
        )
    return contract.outputs[0]


def _named_output(pf: PipelineFile, contract: ModelContract, role: str) -> ModelTensor:
    names = ", ".join(repr(n) for n in contract.output_names)
    wanted = pf.postprocess.options.get("outputs", {}).get(role)
    if wanted is None:
        raise _error(pf, f"postprocess.outputs.{role}", f"needed: which output holds the {role}")
    try:
        return contract.output(wanted)
    except KeyError:
        raise _error(
            pf, f"postprocess.outputs.{role}", f"the model has no output {wanted!r} ({names})"
        ) from None


def _expect(pf: PipelineFile, field: str, tensor: ModelTensor, ok: bool, wanted: str) -> None:
    if not ok:
        raise _error(
            pf, field, f"expects {wanted}; the model's output {tensor.name!r} is {_shape(tensor)}"
        )


def _at_input_resolution(pf: PipelineFile, tensor: ModelTensor, pre: PreprocessSpec) -> None:
    if pre.dynamic:  # both follow the image; META maps the map back
        return
    h, w = tensor.dims[-2:]
    if (h > 0 and h != pre.crop[0]) or (w > 0 and w != pre.crop[1]):
        raise _error(
            pf,
            "postprocess.output",
            f"maps are taken back to the original image from the input's {pre.crop[0]}x"
            f"{pre.crop[1]}; the model's output {tensor.name!r} is {_shape(tensor)}",
        )


def _labels(pf: PipelineFile, classes: int) -> tuple[str, ...] | None:
    path = pf.postprocess.options.get("labels")
    if path is None:
        return None
    names = tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    if classes > 0 and len(names) != classes:
        raise _error(
            pf,
            "postprocess.labels",
            f"{path} has {len(names)} labels; the model scores {classes} classes",
        )
    return names


def _detection_keywords(pf: PipelineFile, pre: PreprocessSpec, yolo: bool) -> dict[str, Any]:
    o = pf.postprocess.options
    nms = o.get("nms", yolo)
    if pre.dynamic and o.get("normalized"):
        raise _error(
            pf,
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
) -> tuple[tuple[TensorSpec, ...], PostprocessParams, tuple[TensorSpec, ...]] | None:
    """(stage inputs, params, outputs) of the postprocess stage the file declares, checked
    against the model's outputs; None for ``raw`` (no stage: the model's outputs are the
    pipeline's)."""
    kind, o = pf.postprocess.kind, pf.postprocess.options
    spec = {t.name: _tensor_spec(pf, t) for t in contract.outputs}
    if kind == "raw":
        for name in o.get("outputs", []):
            if name not in spec:
                raise _error(
                    pf, "postprocess.outputs", f"the model has no output {name!r} ({list(spec)})"
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
        from cvserve.preprocess.tensors import DEPTH

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


# --- the spec ---------------------------------------------------------------------------------


def _file_pipeline(pf: PipelineFile, cores: int | None) -> PipelineSpec:
    serving = pf.serving
    device = serving.device
    contract, pre, own_batch = _read_model(pf, device)
    model_input = (
        contract.inputs[0] if pf.model.kind == "torchscript" else _input_tensor(pf, contract)
    )
    for clash in (META, "IMAGE"):
        if clash in contract.output_names or model_input.name == clash:
            raise _error(pf, "model", f"a model tensor is named {clash!r}, which cvserve uses")
    plan = serving_plan(
        device,  # type: ignore[arg-type]
        serving.max_batch_size or (own_batch or None),
        serving.instances,
        serving.torch_threads,
        serving.dali_threads,
        serving.max_queue_delay_us,
        serving.preferred_batch_sizes,
        cores=cores,
    )
    if own_batch and plan.batching.max_batch_size > own_batch:
        raise _error(
            pf,
            "serving.max_batch_size",
            f"{plan.batching.max_batch_size}; the Triton model {pf.model.name} takes at most "
            f"{own_batch} (its config.pbtxt)",
        )
    pixels, meta = preprocess_outputs(pre, model_input.name)
    dnn_outputs = tuple(_tensor_spec(pf, t) for t in contract.outputs)
    if pf.model.kind == "triton":
        dnn = StageSpec(
            name=str(pf.model.name),
            role="inference",
            adapter="",
            inputs=(pixels,),
            outputs=dnn_outputs,
            params=TritonModelParams(str(pf.model.repository), str(pf.model.name)),
            batching=dataclasses.replace(plan.batching, max_batch_size=own_batch),
            instances=plan.instances,
            device=device,  # type: ignore[arg-type]
        )
    else:
        params = DnnParams(
            model_file=str(pf.model.path),
            model_format=pf.model.kind,  # type: ignore[arg-type]
            torch_threads=plan.torch_threads,
            engine=serving.engine,  # type: ignore[arg-type]
            precision=serving.precision or "fp32",  # type: ignore[arg-type]
        )
        dnn = dnn_stage(
            f"{pf.name}_dnn",
            params,
            pixels,
            dnn_outputs,
            plan.batching,
            plan.instances,
            device,  # type: ignore[arg-type]
        )
    stages = [
        preprocess_stage(
            f"{pf.name}_preprocess",
            PreprocessParams(pre, num_threads=plan.dali_threads),
            plan.batching,
            plan.instances,
            pixels_name=model_input.name,
        ),
        dnn,
    ]
    post = postprocess_plan(pf, contract, pre, meta)
    if post is None:
        wanted = pf.postprocess.options.get("outputs") or [t.name for t in dnn_outputs]
        outputs = tuple(t for t in dnn_outputs if t.name in wanted)
    else:
        inputs, params, outputs = post
        stages.append(
            StageSpec(
                name=f"{pf.name}_postprocess",
                role="postprocess",
                adapter=f"{ADAPTERS}.postprocess",
                inputs=inputs,
                outputs=outputs,
                params=params,
                batching=plan.batching,
                instances=1,
                device=device,  # type: ignore[arg-type]  # answers cross to the host, not logits
            )
        )
    label = pf.model.name or Path(str(pf.model.path)).name
    return PipelineSpec(
        name=pf.name,
        stages=tuple(stages),
        inputs=(stages[0].inputs[0],),
        outputs=outputs,
        description=pf.description
        or f"{pf.name}: DALI preprocess → {label} → {pf.postprocess.kind}",
    )


def _arch_pipeline(
    pf: PipelineFile, preprocess: PreprocessSpec | None, cores: int | None
) -> PipelineSpec:
    """An ``arch`` model's pipeline: its task's stages (`builders.TASKS`) around the network,
    preprocessed as the architecture declares unless the file's ``input`` (or ``preprocess``)
    says otherwise."""
    kind, o = pf.postprocess.kind, pf.postprocess.options
    if kind not in ARCH_TASKS:
        raise _error(pf, "postprocess.kind", f"{kind}: an arch model takes {', '.join(ARCH_TASKS)}")
    task, arch_task = ARCH_TASKS[kind]
    arch = architecture(str(pf.model.arch))
    if arch.task != arch_task:
        raise _error(pf, "postprocess.kind", f"{kind}, but {arch.name} is a {arch.task} network")
    allowed = {"top_k", "score_threshold", "max_detections", "labels"}
    extra = sorted(set(o) - allowed)
    if extra:
        raise _error(pf, f"postprocess.{extra[0]}", "an arch model's postprocessing is its task's")
    s = pf.serving
    device = s.device
    if preprocess is None and pf.input != InputDecl():
        base = preprocess_spec_for(arch.name)
        preprocess = preprocess_from(pf.input, pf.input.size or base.crop, device, base)
    plan = serving_plan(
        device,  # type: ignore[arg-type]
        s.max_batch_size,
        s.instances,
        s.torch_threads,
        s.dali_threads,
        s.max_queue_delay_us,
        s.preferred_batch_sizes,
        cores=cores,
    )
    shape = TASKS[task]
    pre = dataclasses.replace(preprocess or preprocess_spec_for(arch.name), device=device)
    classes = pf.model.num_classes or arch.num_classes
    pixels, meta = preprocess_outputs(pre)
    dnn_outputs = shape.dnn_outputs(classes, pre.output_shape[1:])
    keywords: dict[str, Any] = {
        "classify": {"k": o.get("top_k", DEFAULT_TOP_K)},
        "detect": {
            "score_threshold": o.get("score_threshold", DEFAULT_SCORE_THRESHOLD),
            "max_detections": o.get("max_detections", DEFAULT_MAX_DETECTIONS),
        },
    }.get(task, {})
    results = shape.results(keywords)
    dnn = DnnParams(
        arch=arch.name,
        num_classes=classes,
        seed=pf.model.seed,
        weights=pf.model.weights,
        torch_threads=plan.torch_threads,
        engine=s.engine,  # type: ignore[arg-type]
        precision=s.precision or "fp32",  # type: ignore[arg-type]
    )
    stages = (
        preprocess_stage(
            f"{pf.name}_preprocess",
            PreprocessParams(pre, num_threads=plan.dali_threads),
            plan.batching,
            plan.instances,
        ),
        dnn_stage(
            f"{pf.name}_dnn",
            dnn,
            pixels,
            dnn_outputs,
            plan.batching,
            plan.instances,
            device,  # type: ignore[arg-type]
        ),
        StageSpec(
            name=f"{pf.name}_postprocess",
            role="postprocess",
            adapter=f"{ADAPTERS}.postprocess",
            inputs=(*dnn_outputs, meta) if shape.uses_meta else dnn_outputs,
            outputs=results,
            params=PostprocessParams(shape.postprocess, keywords=keywords),
            batching=plan.batching,
            instances=1,
            device=device,  # type: ignore[arg-type]  # on the GPU: only the answers cross
        ),
    )
    return PipelineSpec(
        name=pf.name,
        stages=stages,
        inputs=(stages[0].inputs[0],),
        outputs=results,
        description=pf.description
        or f"{task}: DALI preprocess → {arch.name} → {shape.postprocess}",
    )


def _fused(pf: PipelineFile, spec: PipelineSpec) -> PipelineSpec:
    """``spec`` with its stages served as one model (`models.fusion`) when the file says so."""
    if not pf.serving.fuse_stages:
        return spec
    try:
        return fuse_stages(spec)
    except NotFusable as exc:
        raise _error(pf, "serving.fuse_stages", str(exc)) from None


def build_spec(
    pf: PipelineFile, preprocess: PreprocessSpec | None = None, *, cores: int | None, **options: Any
) -> PipelineSpec:
    """The spec of pipeline file ``pf`` with command-line ``options`` applied, served on a
    machine of ``cores`` cores (None: unknown, `defaults.serving_defaults`); ``preprocess``
    replaces the declared preprocessing (arch models only: a model file's is checked)."""
    pf = with_options(pf, **options)
    engine, allowed = pf.serving.engine, ENGINES_BY_KIND[pf.model.kind]
    if engine is not None and engine not in allowed:
        raise _error(
            pf, "serving.engine", f"{engine}: a {pf.model.kind} model runs on {', '.join(allowed)}"
        )
    reason = precision_refused(pf.serving.precision, engine, pf.serving.device or "cpu")
    if reason:
        raise _error(pf, "serving.precision", reason)
    if pf.model.kind == "arch":
        return _fused(pf, _arch_pipeline(pf, preprocess, cores))
    if preprocess is not None:
        raise _error(pf, "input", "a model file's preprocessing is the file's, checked against it")
    return _fused(pf, _file_pipeline(pf, cores))


def composite_of(f: CompositeFile) -> CompositeSpec:
    """The composite a file declares (names and fan-outs only: nothing is built or read)."""
    return CompositeSpec(
        f.name,
        tuple(
            CompositeStage(
                part.pipeline.name,
                None
                if part.fan_out is None
                else CropFanOut(part.fan_out.score_threshold, part.fan_out.max_crops),
                workers=part.workers or 1,
                rate=part.rate,
            )
            for part in f.parts
        ),
    )


def composite_specs(
    cf: CompositeFile, *, cores: int | None, **options: Any
) -> tuple[CompositeSpec, list[PipelineSpec]]:
    """The composite of a file and the ensembles serving it on a machine of ``cores`` cores
    (None: unknown). ``options`` apply to every stage but ``arch`` (and the model's weights and
    seed) only to the first; on a CPU server of known cores the stages share them unless
    ``torch_threads`` is given."""
    shared_cpu = options.get("device") in (None, "cpu")
    if shared_cpu and cores is not None and options.get("torch_threads") is None:
        # Several DNNs on one CPU server share the cores instead of oversubscribing them
        # (measured: 8.0 vs 2.6 img/s for detect_identify at 4 in flight on 2 cores).
        options = {**options, "torch_threads": max(1, cores // len(cf.parts))}
    first_only = ("arch", "weights", "seed", "num_classes")
    later = {k: v for k, v in options.items() if k not in first_only}
    specs = [
        build_spec(part.pipeline, cores=cores, **(options if i == 0 else later))
        for i, part in enumerate(cf.parts)
    ]
    return composite_of(cf), specs
