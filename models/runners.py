"""Run a DNN stage's network on a batch, whatever it is: a `models.zoo` architecture (torch
eager), a TorchScript file (torch) or an ONNX file (onnxruntime, CPU).

``runner(pixels)`` takes the preprocessed batch, a NumPy array (N, *input dims) of the stage's
input dtype, and returns the network's outputs as NumPy arrays, in the model's own output order.
The Triton DNN adapter, `models.local_pipeline` and the benchmarks all run networks through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cvserve.models.params import DnnParams

Runner = Callable[[np.ndarray], list[np.ndarray]]


def _numpy(outputs: Any, names: Sequence[str] | None = None) -> list[np.ndarray]:
    """A module's outputs (tensor, tuple / list of tensors, dict by name) as NumPy arrays; a
    dict is read in ``names`` order when given, else in its own."""
    import torch

    if isinstance(outputs, torch.Tensor):
        return [outputs.detach().cpu().numpy()]
    if isinstance(outputs, dict):
        keys = list(names) if names and set(names) <= set(outputs) else list(outputs)
        return [outputs[k].detach().cpu().numpy() for k in keys]
    return [o.detach().cpu().numpy() for o in outputs]


def torch_runner(module: Any, threads: int | None, names: Sequence[str] | None = None) -> Runner:
    """A torch module (eager or TorchScript) on the CPU with ``threads`` intra-op threads (torch's
    setting is per process; None leaves it)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)

    def run(pixels: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return _numpy(module(torch.from_numpy(np.ascontiguousarray(pixels))), names)

    return run


def onnx_session(path: str, threads: int) -> Any:
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers are not ours to fix
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_runner(path: str, threads: int) -> Runner:
    """An ONNX model with one input, every output in the graph's order."""
    session = onnx_session(path, threads)
    (model_input,) = session.get_inputs()
    names = [o.name for o in session.get_outputs()]

    def run(pixels: np.ndarray) -> list[np.ndarray]:
        return list(session.run(names, {model_input.name: pixels}))

    return run


def load_runner(
    params: DnnParams, output_names: Sequence[str] | None = None, set_threads: bool = True
) -> Runner:
    """The runner of a DNN stage's network (``output_names``: a TorchScript dict's keys).
    ``set_threads=False`` leaves torch's per-process thread count as it is (a test process)."""
    if params.model_format == "onnx":
        return onnx_runner(str(params.model_file), params.torch_threads)
    import torch

    threads = params.torch_threads if set_threads else None
    if params.model_format == "torchscript":
        module = torch.jit.load(str(params.model_file), map_location="cpu").eval()
    else:
        from cvserve.models.zoo import build_dnn

        run = torch_runner(build_dnn(params), threads, output_names)
        return lambda pixels: run(pixels.astype(np.float32, copy=False))  # fp32 modules
    return torch_runner(module, threads, output_names)
