"""The NGC target: a model repository for the NGC Triton container from the same `PipelineSpec`:
preprocessing as a DALI-backend ``model.dali``, the DNN exported (TorchScript for
``pytorch_libtorch`` or ONNX for ``onnxruntime_onnx``, optionally through TensorRT),
postprocessing as the same python-backend model, and the same ensemble.

The ensemble maps the spec's tensor names onto the exported model's ``INPUT__0`` /
``OUTPUT__<i>`` names; every config comes from `models.repository.config`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from cvserve.models.architectures import architecture
from cvserve.models.export import (
    MODEL_FILES,
    PLATFORMS,
    ExportFormat,
    export,
    input_name,
    output_name,
)
from cvserve.models.params import DnnParams, TritonModelParams
from cvserve.models.repository.config import model_config, write_config
from cvserve.models.repository.local import copy_triton_model, write_ensemble, write_python_stage
from cvserve.models.zoo import build_dnn
from cvserve.pipelines.spec import PipelineSpec, StageSpec
from cvserve.preprocess.dali_model import config_header, dali_version, serialize_dali_model
from cvserve.preprocess.spec import PreprocessParams


def dali_stage_config(stage: StageSpec) -> mc.ModelConfig:
    """The preprocess stage as a DALI-backend model: the spec's tensors, batching, instances."""
    params = stage.params_as(PreprocessParams)
    if len(stage.outputs) not in (1, 2):
        names = [t.name for t in stage.outputs]
        raise ValueError(f"{stage.name}: outputs are (pixels,) or (pixels, meta), not {names}")
    return model_config(
        stage,
        backend="dali",
        parameters={"num_threads": str(params.num_threads), "dali_version": dali_version()},
    )


def write_dali_stage(stage: StageSpec, out: Path) -> Path:
    """``out/<stage>/config.pbtxt`` and ``1/model.dali``; returns the model's folder."""
    config = dali_stage_config(stage)
    params = stage.params_as(PreprocessParams)
    directory = out / stage.name
    serialize_dali_model(
        params.spec,
        directory,
        stage.batching.max_batch_size,
        stage.device,
        params.num_threads,
        with_meta=len(stage.outputs) == 2,
        input_name=stage.inputs[0].name,
    )
    write_config(directory, config, header=config_header(params.spec, stage.device))
    return directory


def dnn_config(
    stage: StageSpec, fmt: ExportFormat, tensorrt: bool, renamed: bool = True
) -> mc.ModelConfig:
    """Config of the DNN: Triton's positional tensor names when cvserve exported it
    (``renamed``), else the model's own; the spec's shapes."""
    names = {
        "input_names": [input_name()],
        "output_names": [output_name(i) for i in range(len(stage.outputs))],
    }
    config = model_config(stage, platform=PLATFORMS[fmt], **(names if renamed else {}))
    if tensorrt and fmt == "onnx":
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        accelerator.name = "tensorrt"
        accelerator.parameters["precision_mode"] = "FP16"
        accelerator.parameters["max_workspace_size_bytes"] = str(1 << 30)
    return config


def exported_names(stage: StageSpec) -> dict[str, str]:
    """Spec tensor name → the exported model's name (``INPUT__0``, ``OUTPUT__<i>``)."""
    (pixels,) = stage.inputs
    names = {pixels.name: input_name()}
    names.update({t.name: output_name(i) for i, t in enumerate(stage.outputs)})
    return names


def write_model_file(dnn: StageSpec, out: Path, tensorrt: bool) -> None:
    """A user's ONNX / TorchScript file as Triton's onnxruntime / libtorch backend serves it:
    copied as ``model.onnx`` / ``model.pt``, its own tensor names in the config."""
    params = dnn.params_as(DnnParams)
    fmt: ExportFormat = params.model_format  # type: ignore[assignment]
    version = out / dnn.name / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(str(params.model_file), version / MODEL_FILES[fmt])
    config = dnn_config(dnn, fmt, tensorrt, renamed=False)
    write_config(out / dnn.name, config)


def write_ngc_repository(
    spec: PipelineSpec, out: Path, fmt: ExportFormat = "torchscript", tensorrt: bool = False
) -> Path:
    """Write ``spec`` for the NGC container under ``out``; returns ``out``."""
    out = Path(out)
    write_dali_stage(spec.stage_by_role("preprocess"), out)
    dnn = spec.stage_by_role("inference")
    renames: dict[str, dict[str, str]] = {}
    if isinstance(dnn.params, TritonModelParams):
        copy_triton_model(dnn, out)
    elif dnn.params_as(DnnParams).model_file:
        write_model_file(dnn, out, tensorrt)
    else:
        params = dnn.params_as(DnnParams)
        arch = str(params.arch)
        if architecture(arch).task == "detection":
            fmt = "torchscript"
        export(build_dnn(params), arch, fmt, out / dnn.name / "1")
        write_config(out / dnn.name, dnn_config(dnn, fmt, tensorrt))
        renames[dnn.name] = exported_names(dnn)
    for stage in spec.stages:
        if stage.role == "postprocess":
            write_python_stage(stage, out)
    write_ensemble(spec, out, **renames)
    return out
