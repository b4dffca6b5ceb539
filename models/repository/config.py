"""The one writer of Triton ``config.pbtxt``: every target's model config comes from here.

`model_config` writes what the spec says of a stage — name, max batch size, tensors, dynamic
batching (queue delay, preferred batch sizes), instance groups (count, kind) — the same for every
backend; a target adds only its backend or platform, tensor renames and parameters. Configs are
Triton's own ``ModelConfig`` protobuf printed in text format, so they are valid by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from cvserve.pipelines.spec import PipelineSpec, StageSpec, TensorSpec, dtype_from_triton

STAGE_PARAMETER = "cvserve_stage"  # config parameter carrying a python-backend stage's params
CONFIG_FILE = "config.pbtxt"


def tensor_message(
    message: mc.ModelInput | mc.ModelOutput, tensor: TensorSpec, name: str | None = None
) -> None:
    """Fill ``message`` from ``tensor``; ``name`` renames it (an exported model's own names)."""
    message.name = name or tensor.name
    message.data_type = mc.DataType.Value(
        f"TYPE_{'STRING' if tensor.dtype == 'bytes' else tensor.triton_dtype}"
    )
    message.dims.extend(tensor.dims)


def model_config(
    stage: StageSpec,
    *,
    backend: str = "",
    platform: str = "",
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    parameters: Mapping[str, str] | None = None,
) -> mc.ModelConfig:
    """The config of ``stage`` served by ``backend`` (or ``platform``); ``input_names`` /
    ``output_names`` rename the spec's tensors in order, ``parameters`` are the target's own."""
    config = mc.ModelConfig(name=stage.name, backend=backend, platform=platform)
    config.max_batch_size = stage.batching.max_batch_size
    inputs = input_names or [t.name for t in stage.inputs]
    outputs = output_names or [t.name for t in stage.outputs]
    for tensor, name in zip(stage.inputs, inputs, strict=True):
        message = config.input.add()
        tensor_message(message, tensor, name)
        message.allow_ragged_batch = tensor.allow_ragged_batch
    for tensor, name in zip(stage.outputs, outputs, strict=True):
        tensor_message(config.output.add(), tensor, name)
    if stage.batching.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = stage.batching.max_queue_delay_us
        config.dynamic_batching.preferred_batch_size.extend(stage.batching.preferred_batch_sizes)
    config.instance_group.add(
        count=stage.instances,
        kind=mc.ModelInstanceGroup.KIND_GPU
        if stage.device == "gpu"
        else mc.ModelInstanceGroup.KIND_CPU,
    )
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return config


def python_stage_config(stage: StageSpec) -> mc.ModelConfig:
    """A python-backend stage: its adapter reads the stage's params from `STAGE_PARAMETER`."""
    parameters = {STAGE_PARAMETER: stage.params.to_json()}
    if stage.device == "gpu":
        # Let GPU tensors reach the model without a host hop (Triton issue 6060).
        parameters["FORCE_CPU_ONLY_INPUT_TENSORS"] = "no"
    return model_config(stage, backend="python", parameters=parameters)


def ensemble_config(
    spec: PipelineSpec, renames: Mapping[str, Mapping[str, str]] | None = None
) -> mc.ModelConfig:
    """The ensemble chaining the stages, wired by tensor name. ``renames[stage][tensor]`` is the
    name a stage's model gives a spec tensor (an exported DNN's ``INPUT__0``)."""
    config = mc.ModelConfig(name=spec.name, platform="ensemble")
    config.max_batch_size = min(s.batching.max_batch_size for s in spec.stages)
    for tensor in spec.inputs:
        tensor_message(config.input.add(), tensor)
    for tensor in spec.outputs:
        tensor_message(config.output.add(), tensor)
    consumed = {t.name for s in spec.stages for t in s.inputs} | {t.name for t in spec.outputs}
    for stage in spec.stages:
        names = (renames or {}).get(stage.name, {})
        step = config.ensemble_scheduling.step.add()
        step.model_name = stage.name
        step.model_version = -1
        for tensor in stage.inputs:
            step.input_map[names.get(tensor.name, tensor.name)] = tensor.name
        # Only outputs someone reads: an unread ensemble tensor is never requested.
        for tensor in stage.outputs:
            if tensor.name in consumed:
                step.output_map[names.get(tensor.name, tensor.name)] = tensor.name
    return config


def write_config(directory: Path, config: mc.ModelConfig, header: str = "") -> Path:
    """``directory/config.pbtxt`` (``header``: comment lines put first); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILE
    path.write_text(header + text_format.MessageToString(config))
    return path


def read_config(path: Path) -> mc.ModelConfig:
    """Parse a ``config.pbtxt`` into Triton's ``ModelConfig``."""
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def config_tensors(entries: Sequence[Mapping[str, object]]) -> list[TensorSpec]:
    """The tensors of a model config's ``input`` or ``output`` list as Triton hands it to a
    python-backend model (JSON: ``name``, ``data_type`` ``TYPE_FP32``, ``dims``)."""
    return [
        TensorSpec(
            str(e["name"]),
            dtype_from_triton(str(e["data_type"])),
            tuple(int(d) for d in e.get("dims", ())),  # type: ignore[union-attr]
        )
        for e in entries
    ]
