"""Write a model repository for the NGC Triton container from the same `PipelineSpec`:
preprocessing as a DALI-backend ``model.dali``, the DNN exported (TorchScript for
``pytorch_libtorch`` or ONNX for ``onnxruntime_onnx``, optionally through TensorRT),
postprocessing as the same python-backend model, and the same ensemble.

The ensemble maps the spec's tensor names onto the exported model's ``INPUT__0`` /
``OUTPUT__<i>`` names; nothing else differs from the local repository.
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from cvserve.models.architectures import architecture
from cvserve.models.export import PLATFORMS, ExportFormat, export, input_name, output_name
from cvserve.models.repository.local import (
    ensemble_config,
    model_py,
    stage_config,
    tensor_message,
    write_config,
)
from cvserve.models.zoo import build_model
from cvserve.pipelines.spec import PipelineSpec, StageSpec
from cvserve.preprocess.dali_model import write_dali_model
from cvserve.preprocess.spec import PreprocessSpec


def dnn_config(stage: StageSpec, fmt: ExportFormat, tensorrt: bool) -> mc.ModelConfig:
    """Config of the exported DNN: Triton's positional tensor names, the spec's shapes."""
    config = mc.ModelConfig(name=stage.name, platform=PLATFORMS[fmt])
    config.max_batch_size = stage.batching.max_batch_size
    (pixels,) = stage.inputs
    message = config.input.add()
    tensor_message(message, pixels)
    message.name = input_name()
    for index, tensor in enumerate(stage.outputs):
        message = config.output.add()
        tensor_message(message, tensor)
        message.name = output_name(index)
    config.dynamic_batching.max_queue_delay_microseconds = stage.batching.max_queue_delay_us
    group = config.instance_group.add()
    group.count = stage.instances
    group.kind = (
        mc.ModelInstanceGroup.KIND_GPU if stage.device == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    )
    if tensorrt and fmt == "onnx":
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        accelerator.name = "tensorrt"
        accelerator.parameters["precision_mode"] = "FP16"
        accelerator.parameters["max_workspace_size_bytes"] = str(1 << 30)
    return config


def ngc_ensemble_config(spec: PipelineSpec) -> mc.ModelConfig:
    """The local ensemble with the DNN step's tensors renamed to the exported names."""
    config = ensemble_config(spec)
    dnn = spec.stage_by_role("inference")
    for step in config.ensemble_scheduling.step:
        if step.model_name != dnn.name:
            continue
        (pixels,) = dnn.inputs
        step.input_map.clear()
        step.input_map[input_name()] = pixels.name
        mapped = dict(step.output_map)
        step.output_map.clear()
        for index, tensor in enumerate(dnn.outputs):
            if tensor.name in mapped:
                step.output_map[output_name(index)] = tensor.name
    return config


def write_ngc_repository(
    spec: PipelineSpec, out: Path, fmt: ExportFormat = "torchscript", tensorrt: bool = False
) -> Path:
    """Write ``spec`` for the NGC container under ``out``; returns ``out``."""
    out = Path(out)
    pre = spec.stage_by_role("preprocess")
    write_dali_model(
        PreprocessSpec.from_dict(pre.params["spec"]),
        out / pre.name,
        max_batch_size=pre.batching.max_batch_size,
        device=pre.device,
        name=pre.name,
        input_name=pre.inputs[0].name,
        outputs=[t.name for t in pre.outputs],
        instances=pre.instances,
        num_threads=int(pre.params["num_threads"]),
    )
    dnn = spec.stage_by_role("inference")
    params = dnn.params
    arch = params["arch"]
    if architecture(arch).task == "detection":
        fmt = "torchscript"
    model = build_model(arch, params["seed"], params.get("weights"), params.get("num_classes"))
    export(model, arch, fmt, out / dnn.name / "1")
    write_config(out / dnn.name, dnn_config(dnn, fmt, tensorrt))
    post = spec.stage_by_role("postprocess")
    write_config(out / post.name, stage_config(post))
    (out / post.name / "1").mkdir(parents=True, exist_ok=True)
    (out / post.name / "1" / "model.py").write_text(model_py(post))
    write_config(out / spec.name, ngc_ensemble_config(spec))
    (out / spec.name / "1").mkdir(parents=True, exist_ok=True)
    return out
