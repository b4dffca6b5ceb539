"""A `PipelineFile` → its `PipelineSpec`, checked against the model before anything is served:
the only way a spec is made. Command-line options override file fields through `with_options`
(`PIPELINE_OPTIONS`); a task's pipeline without a file of its own is `task_file`'s.

One way for every kind of model, read in one direction: the model first becomes a `Network`
(an ``arch`` model: its task's, `builders.TASKS`, as the catalog's pipelines are; a model file
or a model in the user's Triton repository: read and checked by `model_reading`, its outputs by
`postprocess_plan`), then `_assemble` serves it as the file's ``serving`` says. A disagreement
is a `PipelineFileError` naming the file's field and the model's side.

Tensor names are the model's own (``input.1``, ``logits/Softmax:0``): the preprocess stage's
pixels output is named as the model's input, the DNN stage's outputs as the model's outputs.

The serving machine's cores are an argument (``cores``; `catalog.resolve` passes its `Host`'s):
nothing here reads the machine this runs on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvserve.models.architectures import architecture
from cvserve.models.fusion import NotFusable, fuse_stages
from cvserve.models.params import (
    ENGINES_FOR,
    DnnParams,
    PostprocessParams,
    TritonModelParams,
    precision_refused,
)
from cvserve.pipelines.builders import (
    ADAPTERS,
    TASKS,
    dnn_stage,
    preprocess_outputs,
    preprocess_spec_for,
    preprocess_stage,
    serving_plan,
)
from cvserve.pipelines.model_reading import preprocess_from, read_model, tensor_spec
from cvserve.pipelines.pipeline_file import (
    CompositeFile,
    InputDecl,
    ModelDecl,
    PipelineFile,
    PostprocessDecl,
)
from cvserve.pipelines.postprocess_plan import (
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_SCORE_THRESHOLD,
    DEFAULT_TOP_K,
    PostPlan,
    postprocess_plan,
)
from cvserve.pipelines.spec import (
    CompositeSpec,
    CompositeStage,
    CropFanOut,
    PipelineSpec,
    StageSpec,
    TensorSpec,
)
from cvserve.preprocess.spec import PreprocessParams, PreprocessSpec
from cvserve.preprocess.tensors import META

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
                raise pf.error(f"model.{key}", f"given as an option, but the model is {model.kind}")
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


# --- the spec ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """What a file's model makes of its pipeline before any serving setting: the preprocessing
    it gets and the pixels/META that stage outputs; the DNN's params (threads unset) and
    outputs; the postprocess stage (None: the DNN's ``results`` are the pipeline's); the
    model's own max batch size (0: none imposed)."""

    pre: PreprocessSpec
    pixels: TensorSpec
    meta: TensorSpec
    dnn: DnnParams | TritonModelParams
    dnn_outputs: tuple[TensorSpec, ...]
    post: PostPlan | None
    results: tuple[TensorSpec, ...]
    description: str
    own_batch: int = 0


def _file_network(pf: PipelineFile, device: str) -> Network:
    """A model file's (or a Triton model's) network, read and checked (`model_reading`)."""
    model = read_model(pf, device)
    contract = model.contract
    for clash in (META, "IMAGE"):
        if clash in contract.output_names or model.input.name == clash:
            raise pf.error("model", f"a model tensor is named {clash!r}, which cvserve uses")
    pixels, meta = preprocess_outputs(model.pre, model.input.name)
    dnn_outputs = tuple(tensor_spec(pf, t) for t in contract.outputs)
    dnn: DnnParams | TritonModelParams = (
        TritonModelParams(str(pf.model.repository), str(pf.model.name))
        if pf.model.kind == "triton"
        else DnnParams(
            model_file=str(pf.model.path),
            model_format=pf.model.kind,  # type: ignore[arg-type]
            engine=pf.serving.engine,  # type: ignore[arg-type]
            precision=pf.serving.precision or "fp32",  # type: ignore[arg-type]
        )
    )
    post = postprocess_plan(pf, contract, model.pre, meta)
    wanted = pf.postprocess.options.get("outputs") or [t.name for t in dnn_outputs]
    label = pf.model.name or Path(str(pf.model.path)).name
    return Network(
        model.pre,
        pixels,
        meta,
        dnn,
        dnn_outputs,
        post,
        post[2] if post else tuple(t for t in dnn_outputs if t.name in wanted),
        f"{pf.name}: DALI preprocess → {label} → {pf.postprocess.kind}",
        model.own_batch,
    )


def _arch_network(pf: PipelineFile, preprocess: PreprocessSpec | None, device: str) -> Network:
    """An ``arch`` model's network: its task's (`builders.TASKS`), preprocessed as the
    architecture declares unless the file's ``input`` (or ``preprocess``) says otherwise."""
    kind, o = pf.postprocess.kind, pf.postprocess.options
    if kind not in ARCH_TASKS:
        raise pf.error("postprocess.kind", f"{kind}: an arch model takes {', '.join(ARCH_TASKS)}")
    task, arch_task = ARCH_TASKS[kind]
    arch = architecture(str(pf.model.arch))
    if arch.task != arch_task:
        raise pf.error("postprocess.kind", f"{kind}, but {arch.name} is a {arch.task} network")
    allowed = {"top_k", "score_threshold", "max_detections", "labels"}
    extra = sorted(set(o) - allowed)
    if extra:
        raise pf.error(f"postprocess.{extra[0]}", "an arch model's postprocessing is its task's")
    if preprocess is None and pf.input != InputDecl():
        base = preprocess_spec_for(arch.name)
        preprocess = preprocess_from(pf.input, pf.input.size or base.crop, device, base)
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
        engine=pf.serving.engine,  # type: ignore[arg-type]
        precision=pf.serving.precision or "fp32",  # type: ignore[arg-type]
    )
    post_inputs = (*dnn_outputs, meta) if shape.uses_meta else dnn_outputs
    post = (post_inputs, PostprocessParams(shape.postprocess, keywords=keywords), results)
    description = f"{task}: DALI preprocess → {arch.name} → {shape.postprocess}"
    return Network(pre, pixels, meta, dnn, dnn_outputs, post, results, description)


def _assemble(pf: PipelineFile, net: Network, cores: int | None) -> PipelineSpec:
    """``net`` served as the file's ``serving`` says on a machine of ``cores`` cores: the
    preprocess, DNN and (if any) postprocess stages of one ensemble."""
    s = pf.serving
    device = s.device
    plan = serving_plan(
        device,  # type: ignore[arg-type]
        s.max_batch_size or (net.own_batch or None),
        s.instances,
        s.torch_threads,
        s.dali_threads,
        s.max_queue_delay_us,
        s.preferred_batch_sizes,
        cores=cores,
    )
    if net.own_batch and plan.batching.max_batch_size > net.own_batch:
        raise pf.error(
            "serving.max_batch_size",
            f"{plan.batching.max_batch_size}; the Triton model {pf.model.name} takes at most "
            f"{net.own_batch} (its config.pbtxt)",
        )
    if isinstance(net.dnn, TritonModelParams):  # the user's own model, batching as it says
        dnn = StageSpec(
            name=str(pf.model.name),
            role="inference",
            adapter="",
            inputs=(net.pixels,),
            outputs=net.dnn_outputs,
            params=net.dnn,
            batching=dataclasses.replace(plan.batching, max_batch_size=net.own_batch),
            instances=plan.instances,
            device=device,  # type: ignore[arg-type]
        )
    else:
        dnn = dnn_stage(
            f"{pf.name}_dnn",
            dataclasses.replace(net.dnn, torch_threads=plan.torch_threads),
            net.pixels,
            net.dnn_outputs,
            plan.batching,
            plan.instances,
            device,  # type: ignore[arg-type]
        )
    stages = [
        preprocess_stage(
            f"{pf.name}_preprocess",
            PreprocessParams(net.pre, num_threads=plan.dali_threads),
            plan.batching,
            plan.instances,
            pixels_name=net.pixels.name,
        ),
        dnn,
    ]
    if net.post is not None:
        inputs, params, outputs = net.post
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
                device=device,  # type: ignore[arg-type]  # on the GPU: only the answers cross
            )
        )
    return PipelineSpec(
        name=pf.name,
        stages=tuple(stages),
        inputs=(stages[0].inputs[0],),
        outputs=net.results,
        description=pf.description or net.description,
    )


def _fused(pf: PipelineFile, spec: PipelineSpec) -> PipelineSpec:
    """``spec`` with its stages served as one model (`models.fusion`) when the file says so."""
    if not pf.serving.fuse_stages:
        return spec
    try:
        return fuse_stages(spec)
    except NotFusable as exc:
        raise pf.error("serving.fuse_stages", str(exc)) from None


def build_spec(
    pf: PipelineFile, preprocess: PreprocessSpec | None = None, *, cores: int | None, **options: Any
) -> PipelineSpec:
    """The spec of pipeline file ``pf`` with command-line ``options`` applied, served on a
    machine of ``cores`` cores (None: unknown, `defaults.serving_defaults`); ``preprocess``
    replaces the declared preprocessing (arch models only: a model file's is checked)."""
    pf = with_options(pf, **options)
    engine, allowed = pf.serving.engine, ENGINES_BY_KIND[pf.model.kind]
    if engine is not None and engine not in allowed:
        raise pf.error(
            "serving.engine", f"{engine}: a {pf.model.kind} model runs on {', '.join(allowed)}"
        )
    reason = precision_refused(pf.serving.precision, engine, pf.serving.device or "cpu")
    if reason:
        raise pf.error("serving.precision", reason)
    device = pf.serving.device
    if pf.model.kind == "arch":
        net = _arch_network(pf, preprocess, device)
    elif preprocess is not None:
        raise pf.error("input", "a model file's preprocessing is the file's, checked against it")
    else:
        net = _file_network(pf, device)
    return _fused(pf, _assemble(pf, net, cores))


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
