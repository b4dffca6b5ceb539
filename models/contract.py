"""What a model file expects and returns, read from the model itself before anything is served.

`read_onnx` reads the graph's inputs and outputs (dynamic axes as -1); `read_torchscript` runs
the module once on an example input of the declared shape and reads what comes back. Shapes
include the batch dimension; dtypes are NumPy names (``float32``). `pipelines.from_file` checks
a pipeline file's preprocessing and postprocessing against these, so a mismatch is an error at
``cvserve repo build``, not at the first request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# onnxruntime's element type names → NumPy's.
_ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class ContractError(ValueError):
    """A model and what a pipeline declares around it disagree (or the model cannot be read)."""


@dataclass(frozen=True)
class ModelTensor:
    """One input or output of a model: name, NumPy dtype name, shape with the batch first
    (-1 where the model leaves a dimension dynamic)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def dims(self) -> tuple[int, ...]:
        """The shape without the batch dimension."""
        return self.shape[1:]


@dataclass(frozen=True)
class ModelContract:
    """A model's inputs and outputs, in the model's order."""

    inputs: tuple[ModelTensor, ...]
    outputs: tuple[ModelTensor, ...]

    def output(self, name: str) -> ModelTensor:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def _dim(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else -1


def read_onnx(path: Path) -> ModelContract:
    """The contract of an ONNX file (onnxruntime reads it; nothing runs)."""
    from cvserve.models.runners import onnx_session

    try:
        session = onnx_session(str(path), threads=1)
    except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
        raise ContractError(f"{path}: not a readable ONNX model ({exc})") from exc

    def tensors(items: list) -> tuple[ModelTensor, ...]:
        return tuple(
            ModelTensor(t.name, _ONNX_DTYPES.get(t.type, t.type), tuple(map(_dim, t.shape)))
            for t in items
        )

    return ModelContract(tensors(session.get_inputs()), tensors(session.get_outputs()))


def torchscript_output_names(outputs: object) -> list[str]:
    """The names cvserve gives a TorchScript module's outputs: a dict's keys, else Triton's
    libtorch convention ``OUTPUT__<i>``."""
    if isinstance(outputs, dict):
        return [str(k) for k in outputs]
    count = 1 if not isinstance(outputs, tuple | list) else len(outputs)
    return [f"OUTPUT__{i}" for i in range(count)]


def read_torchscript(path: Path, example: np.ndarray, input_name: str) -> ModelContract:
    """The contract of a TorchScript file, from one run on ``example`` (batch first): the input
    as given, each output's dtype and shape as returned (every dimension fixed)."""
    import torch

    from cvserve.models.runners import output_tensors

    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # torch raises RuntimeError or its own for a non-TorchScript file
        raise ContractError(f"{path}: not a readable TorchScript module ({exc})") from exc
    try:
        with torch.inference_mode():
            raw = module(torch.from_numpy(example))
    except Exception as exc:  # the module's own error on an input it cannot take
        shape = "x".join(map(str, example.shape))
        raise ContractError(
            f"{path}: the model fails on the declared input {shape} {example.dtype}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    names = torchscript_output_names(raw)
    outputs = tuple(
        ModelTensor(name, str(a.dtype), tuple(a.shape))
        for name, a in zip(names, (o.numpy() for o in output_tensors(raw)), strict=True)
    )
    return ModelContract((ModelTensor(input_name, str(example.dtype), example.shape),), outputs)
