"""The NGC target: a model repository for the NGC Triton container from the same `PipelineSpec`:
preprocessing as a DALI-backend ``model.dali``, the DNN exported (TorchScript for
``pytorch_libtorch`` or ONNX for ``onnxruntime_onnx``, optionally through TensorRT),
postprocessing as the same python-backend model, and the same ensemble.

The ensemble maps the spec's tensor names onto the exported model's ``INPUT__0`` /
``OUTPUT__<i>`` names; every config comes from `models.repository.config`.
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from cvserve.models.architectures import architecture
from cvserve.models.export import PLATFORMS, ExportFormat, export, input_name, output_name
from cvserve.models.params import DnnParams
from cvserve.models.repository.config import model_config, write_config
from cvserve.models.repository.local import write_ensemble, write_python_stage
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


def dnn_config(stage: StageSpec, fmt: ExportFormat, tensorrt: bool) -> mc.ModelConfig:
    """Config of the exported DNN: Triton's positional tensor names, the spec's shapes."""
    config = model_config(
        stage,
        platform=PLATFORMS[fmt],
        input_names=[input_name()],
        output_names=[output_name(i) for i in range(len(stage.outputs))],
    )
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


def write_ngc_repository(
    spec: PipelineSpec, out: Path, fmt: ExportFormat = "torchscript", tensorrt: bool = False
) -> Path:
    """Write ``spec`` for the NGC container under ``out``; returns ``out``."""
    out = Path(out)
    write_dali_stage(spec.stage_by_role("preprocess"), out)
    dnn = spec.stage_by_role("inference")
    params = dnn.params_as(DnnParams)
    if architecture(params.arch).task == "detection":
        fmt = "torchscript"
    export(build_dnn(params), params.arch, fmt, out / dnn.name / "1")
    write_config(out / dnn.name, dnn_config(dnn, fmt, tensorrt))
    write_python_stage(spec.stage_by_role("postprocess"), out)
    write_ensemble(spec, out, **{dnn.name: exported_names(dnn)})
    return out
