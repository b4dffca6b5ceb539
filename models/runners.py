"""Run a DNN stage's network on a batch, whatever it is — a `models.zoo` architecture, a
TorchScript file or an ONNX file — on its engine: torch eager (NCHW or channels-last),
onnxruntime, or OpenVINO (fp32, bf16 where allowed and supported), all on the CPU.

``runner(pixels)`` takes the preprocessed batch, a NumPy array (N, *input dims) of the stage's
input dtype, and returns the network's outputs as NumPy arrays, in the model's own output order.
The Triton DNN adapter, `models.local_pipeline` and the benchmarks all run networks through here.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cvserve.deploy.host import usable_cores
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
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads that stop
    spinning when a run returns."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers are not ours to fix
    # Idle intra-op threads spin by default, also between runs, taking the cores from DALI in the
    # same server. Stopping the spin when a run returns (spinning within a run keeps the DNN
    # alone as fast): served classify mobilenet_v3_small, 2 + 2 threads, 232-239 -> 277-288
    # img/s, DNN stub 3.9-4.2 -> 2.3-2.4 CPU ms/img (bench efficiency, alternating; README).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_runner(path: str, threads: int) -> Runner:
    """An ONNX model with one input, every output in the graph's order."""
    session = onnx_session(path, threads)
    (model_input,) = session.get_inputs()
    names = [o.name for o in session.get_outputs()]

    def run(pixels: np.ndarray) -> list[np.ndarray]:
        return list(session.run(names, {model_input.name: pixels}))

    return run


def channels_last_runner(module: Any, threads: int | None) -> Runner:
    """A torch module in channels-last memory format (NHWC kernels on the CPU), NCHW in/out."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    module = module.to(memory_format=torch.channels_last)

    def run(pixels: np.ndarray) -> list[np.ndarray]:
        tensor = torch.from_numpy(np.ascontiguousarray(pixels))
        with torch.inference_mode():
            return _numpy(module(tensor.contiguous(memory_format=torch.channels_last)))

    return run


def openvino_config(threads: int, precision: str) -> dict[str, Any]:
    """OpenVINO CPU properties for ``threads`` threads at ``precision`` (``bf16`` or fp32). The
    threads are pinned to cores only when they span every core: OpenVINO pins each process's
    threads from the first core, so two instances of fewer threads would share one core and leave
    the other idle (served resnet50 bf16, two instances of one thread: 83 img/s pinned)."""
    return {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": threads,
        "ENABLE_CPU_PINNING": threads >= usable_cores(),
    }


def openvino_runner(path: str, threads: int, precision: str) -> tuple[Runner, str]:
    """An ONNX model compiled by OpenVINO for the CPU (`openvino_config`) at ``precision``
    (``bf16`` only where the CPU reports it; else fp32, said in the returned precision)."""
    import openvino as ov

    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        precision = "fp32"  # the caller logs that bf16 was asked for
    compiled = core.compile_model(path, "CPU", openvino_config(threads, precision))
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(pixels: np.ndarray) -> list[np.ndarray]:
        result = request.infer({0: np.ascontiguousarray(pixels)})
        return [np.array(result[o]) for o in outputs]

    return run, precision


@dataclass(frozen=True)
class Loaded:
    """A network ready to run: the runner, the engine and precision it runs on, and why it is not
    the one asked for (None when it is)."""

    run: Runner
    engine: str
    precision: str
    fallback: str | None = None


def _onnx_file(params: DnnParams) -> str:
    """The ONNX file of the stage's network: its own, or the architecture exported (`_exported`,
    once per process and network, whatever the engine)."""
    if params.model_format == "onnx":
        return str(params.model_file)
    return _exported(str(params.arch), params.num_classes, params.seed, params.weights)


@functools.cache
def _exported(arch: str, num_classes: int | None, seed: int, weights: str | None) -> str:
    """The architecture exported to ONNX into a temporary folder: every ONNX engine loads it."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    from cvserve.models.export import export_onnx
    from cvserve.models.zoo import build_model

    folder = Path(tempfile.mkdtemp(prefix="cvserve-engine-"))
    atexit.register(shutil.rmtree, folder, True)  # removed when the process ends (ignore_errors)
    return str(
        export_onnx(build_model(arch, seed, weights, num_classes), arch, folder / "model.onnx")
    )


def _torch_module(params: DnnParams) -> Any:
    import torch

    if params.model_format == "torchscript":
        return torch.jit.load(str(params.model_file), map_location="cpu").eval()
    from cvserve.models.zoo import build_dnn

    return build_dnn(params)


def _load(
    params: DnnParams, engine: str, names: Sequence[str] | None, threads: int | None
) -> Loaded:
    if engine == "tensorrt":
        raise RuntimeError("TensorRT runs on the NGC target's GPU (repo build --target ngc)")
    if engine == "onnxruntime":
        return Loaded(onnx_runner(_onnx_file(params), params.torch_threads), engine, "fp32")
    if engine == "openvino":
        run, precision = openvino_runner(_onnx_file(params), params.torch_threads, params.precision)
        reason = None
        if precision != params.precision:
            reason = f"{params.precision} asked for, but this CPU has no BF16: running fp32"
        return Loaded(run, engine, precision, reason)
    module = _torch_module(params)
    if engine == "torch_channels_last":
        run = channels_last_runner(module, threads)
    else:
        run = torch_runner(module, threads, names)
    if params.model_format is None:  # cvserve's own modules are fp32
        fp32 = run
        run = lambda pixels: fp32(pixels.astype(np.float32, copy=False))  # noqa: E731
    return Loaded(run, engine, "fp32")


def load_engine(
    params: DnnParams, output_names: Sequence[str] | None = None, set_threads: bool = True
) -> Loaded:
    """The stage's network on its engine. An engine that cannot load the model (an op it lacks,
    a detector that does not export to ONNX, a package missing) falls back to the model's own
    engine, with the reason logged and returned — a stage never dies of its engine choice.
    ``set_threads=False`` leaves torch's per-process thread count as it is (a test process)."""
    threads = params.torch_threads if set_threads else None
    engine = params.chosen_engine
    natural = params.own_engine
    try:
        loaded = _load(params, engine, output_names, threads)
    except Exception as exc:  # any engine's own error type: the fallback is the point
        if engine == natural:
            raise
        reason = f"{engine} cannot run {params.label}: {type(exc).__name__}: {exc}"
        reason = reason.splitlines()[0][:300] + f"; running on {natural}"
        loaded = dataclasses.replace(_load(params, natural, output_names, threads), fallback=reason)
    if loaded.fallback:
        logging.getLogger(__name__).warning("%s", loaded.fallback)
    return loaded


def load_runner(
    params: DnnParams, output_names: Sequence[str] | None = None, set_threads: bool = True
) -> Runner:
    """The runner of a DNN stage's network (`load_engine`; ``output_names``: a TorchScript
    dict's keys)."""
    return load_engine(params, output_names, set_threads).run
