"""The NGC target: a model repository for the NGC Triton container from the same `PipelineSpec`:
preprocessing as a DALI-backend ``model.dali``, the DNN exported (TorchScript for
``pytorch_libtorch``, ONNX for ``onnxruntime_onnx`` — optionally through TensorRT — or for
``openvino``, as the stage's engine says: `ngc_backend`),
postprocessing as the same python-backend model, and the same ensemble.

The ensemble maps the spec's tensor names onto the exported model's ``INPUT__0`` /
``OUTPUT__<i>`` names; every config comes from `models.repository.config`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
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
from cvserve.pipelines.variants import unfused
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


@dataclass(frozen=True)
class NgcBackend:
    """How the NGC container serves a DNN: the file format, and TensorRT or OpenVINO on it."""

    fmt: ExportFormat
    tensorrt: bool = False
    openvino: bool = False


def ngc_backend(params: DnnParams, fmt: ExportFormat, tensorrt: bool) -> NgcBackend:
    """The stage's engine as a Triton backend: torch / torch_channels_last → libtorch
    (TorchScript), onnxruntime → onnxruntime, openvino → openvino (ONNX, on the CPU),
    tensorrt → onnxruntime with the TensorRT accelerator; no engine: ``fmt`` and ``tensorrt``
    as the command line says. A model file keeps its format; a detector is TorchScript."""
    engine = params.engine
    if params.model_format is not None:
        fmt = params.model_format
    elif (params.arch and architecture(params.arch).task == "detection") or engine in (
        "torch",
        "torch_channels_last",
    ):
        fmt = "torchscript"
    elif engine in ("onnxruntime", "openvino", "tensorrt"):
        fmt = "onnx"
    onnx = fmt == "onnx"
    return NgcBackend(
        fmt,
        tensorrt=onnx and (engine == "tensorrt" or (engine is None and tensorrt)),
        openvino=onnx and engine == "openvino",
    )


def dnn_config(stage: StageSpec, backend: NgcBackend, renamed: bool = True) -> mc.ModelConfig:
    """Config of the DNN: Triton's positional tensor names when cvserve exported it
    (``renamed``), else the model's own; the spec's shapes."""
    names = {
        "input_names": [input_name()],
        "output_names": [output_name(i) for i in range(len(stage.outputs))],
    }
    fmt, tensorrt = backend.fmt, backend.tensorrt
    if backend.openvino:  # OpenVINO reads the ONNX file itself, and runs on the CPU
        config = model_config(stage, backend="openvino", **(names if renamed else {}))
        config.default_model_filename = MODEL_FILES["onnx"]
        for group in config.instance_group:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
        return config
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


def write_model_file(dnn: StageSpec, out: Path, backend: NgcBackend) -> None:
    """A user's ONNX / TorchScript file as Triton's onnxruntime / openvino / libtorch backend
    serves it: copied as ``model.onnx`` / ``model.pt``, its own tensor names in the config."""
    params = dnn.params_as(DnnParams)
    version = out / dnn.name / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(str(params.model_file), version / MODEL_FILES[backend.fmt])
    write_config(out / dnn.name, dnn_config(dnn, backend, renamed=False))


def write_ngc_repository(
    spec: PipelineSpec, out: Path, fmt: ExportFormat = "torchscript", tensorrt: bool = False
) -> Path:
    """Write ``spec`` for the NGC container under ``out``; returns ``out``. Fusion
    (`models.fusion`) is the CPU python backend's: here the stages are apart, on Triton's
    DALI and DNN backends."""
    spec = unfused(spec)
    out = Path(out)
    write_dali_stage(spec.stage_by_role("preprocess"), out)
    dnn = spec.stage_by_role("inference")
    renames: dict[str, dict[str, str]] = {}
    if isinstance(dnn.params, TritonModelParams):
        copy_triton_model(dnn, out)
    elif dnn.params_as(DnnParams).model_file:
        write_model_file(dnn, out, ngc_backend(dnn.params_as(DnnParams), fmt, tensorrt))
    else:
        params = dnn.params_as(DnnParams)
        backend = ngc_backend(params, fmt, tensorrt)
        export(build_dnn(params), str(params.arch), backend.fmt, out / dnn.name / "1")
        write_config(out / dnn.name, dnn_config(dnn, backend))
        renames[dnn.name] = exported_names(dnn)
    for stage in spec.stages:
        if stage.role == "postprocess":
            write_python_stage(stage, out)
    write_ensemble(spec, out, **renames)
    return out
