"""Export serving modules for the NGC Triton container: TorchScript (``pytorch_libtorch``) or
ONNX (``onnxruntime``), with Triton's ``INPUT__0`` / ``OUTPUT__<i>`` tensor naming."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from cvserve.models.architectures import architecture

ExportFormat = Literal["torchscript", "onnx"]
MODEL_FILES: dict[str, str] = {"torchscript": "model.pt", "onnx": "model.onnx"}
PLATFORMS: dict[str, str] = {"torchscript": "pytorch_libtorch", "onnx": "onnxruntime_onnx"}


class ExportError(RuntimeError):
    """A model cannot be exported in the requested format."""


def input_name() -> str:
    return "INPUT__0"


def output_name(index: int) -> str:
    return f"OUTPUT__{index}"


def example_input(arch: str, batch: int = 2) -> torch.Tensor:
    """A deterministic input batch of the architecture's size."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, 3, *architecture(arch).input_size), generator=generator)


def export_torchscript(model: nn.Module, arch: str, path: Path) -> Path:
    """Detectors are scripted (data-dependent control flow); the rest traced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if architecture(arch).task == "detection":
            module = torch.jit.script(model)
        else:
            with torch.inference_mode(False), torch.no_grad():
                module = torch.jit.trace(model, example_input(arch), check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.save(str(path))
    return path


def export_onnx(model: nn.Module, arch: str, path: Path, opset: int = 17) -> Path:
    """ONNX with dynamic batch, height and width axes (TorchScript-based exporter), so a
    pipeline's own input size runs on it. Detectors are refused: serve them as TorchScript."""
    if architecture(arch).task == "detection":
        raise ExportError(f"{arch}: detectors are exported as TorchScript, not ONNX")
    if importlib.util.find_spec("onnx") is None:
        raise ExportError("ONNX export needs the onnx package: pip install 'cvserve[ngc]'")
    example = example_input(arch)
    with torch.no_grad():
        outputs = model(example)
    count = len(outputs) if isinstance(outputs, tuple) else 1
    names = [output_name(i) for i in range(count)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name()],
            output_names=names,
            dynamic_axes={
                input_name(): {0: "batch", 2: "height", 3: "width"},
                **{n: {0: "batch"} for n in names},
            },
            opset_version=opset,
            dynamo=False,
        )
    return path


def export(model: nn.Module, arch: str, fmt: ExportFormat, directory: Path) -> Path:
    """Write ``model`` into ``directory`` as Triton expects (``model.pt`` / ``model.onnx``)."""
    path = Path(directory) / MODEL_FILES[fmt]
    if fmt == "torchscript":
        return export_torchscript(model, arch, path)
    return export_onnx(model, arch, path)
