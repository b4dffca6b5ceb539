"""Run a DNN stage's network on a batch, whatever it is — a `models.zoo` architecture, a
TorchScript file or an ONNX file — on its engine and device: torch eager (NCHW or
channels-last; on the CPU or a CUDA GPU, fp32 / fp16 / bf16 there), onnxruntime (CPU, or its
CUDA provider where onnxruntime-gpu is installed), or OpenVINO (CPU, fp32 or bf16).

``runner(pixels)`` takes the preprocessed batch (N, *input dims): a ``torch.Tensor`` on any
device (or a NumPy array), and returns the network's outputs as ``torch.Tensor`` on the
runner's device (``"cpu"`` or ``"cuda:<id>"``), in the model's own output order and dtypes (an
output computed at a reduced precision comes back as float32). A tensor on another device is
moved there first (the adapters refuse a tensor from another GPU before it gets here:
`models.devices.on_device`). The Triton DNN and fused adapters, `models.local_pipeline` and the
benchmarks all run networks through here.
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

Runner = Callable[[Any], list[Any]]  # batch (torch / NumPy) -> outputs (torch, runner's device)
REDUCED = ("fp16", "bf16")

log = logging.getLogger(__name__)


def as_batch(pixels: Any, device: str, dtype: Any = None) -> Any:
    """``pixels`` (torch or NumPy) as a contiguous torch tensor on ``device`` (``dtype``: cast
    to it when given); no copy when it already is one."""
    import torch

    tensor = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.asarray(pixels))
    return tensor.to(device=device, dtype=dtype, non_blocking=True).contiguous()


def output_tensors(outputs: Any, names: Sequence[str] | None = None) -> list[Any]:
    """A module's outputs (tensor, tuple / list of tensors, dict by name) as a list of tensors,
    as the module made them; a dict is read in ``names`` order when given, else in its own."""
    import torch

    if isinstance(outputs, torch.Tensor):
        listed = [outputs]
    elif isinstance(outputs, dict):
        keys = list(names) if names and set(names) <= set(outputs) else list(outputs)
        listed = [outputs[k] for k in keys]
    else:
        listed = list(outputs)
    return [o.detach() for o in listed]


def torch_dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def torch_runner(
    module: Any,
    threads: int | None,
    names: Sequence[str] | None = None,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    cast_input: bool = True,
    cuda_graphs: bool = False,
) -> Runner:
    """A torch module (eager or TorchScript) on ``device`` at ``precision`` (its weights cast
    to it), NCHW in and out, computing in channels-last memory format when ``channels_last``
    (NHWC kernels). ``threads``: torch's intra-op threads (per process; None leaves them).
    ``cast_input``: the batch is cast to the module's precision (else it is passed as the stage
    declares it: a TorchScript file's own input dtype). ``cuda_graphs``: on a GPU, replay one CUDA
    graph per batch bucket (`models.cuda_graphs`) where the module allows it."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # shapes repeat per batch size: tune once each
    dtype = torch_dtype(precision)
    module = module.to(device=device, dtype=dtype) if precision != "fp32" else module.to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        module = module.to(memory_format=torch.channels_last)

    def forward(x: Any) -> list[Any]:
        with torch.inference_mode():
            out = output_tensors(module(x.contiguous(memory_format=memory_format)), names)
        # Reduced precision inside, the stage's float32 outputs outside.
        return [o.float() if o.dtype == dtype != torch.float32 else o for o in out]

    def prepare(pixels: Any) -> Any:
        return as_batch(pixels, device, dtype if cast_input else None)

    if cuda_graphs and device.startswith("cuda"):
        from cvserve.models.cuda_graphs import CudaGraphs

        graphed = CudaGraphs(forward, device)
        return lambda pixels: graphed(prepare(pixels))
    return lambda pixels: forward(prepare(pixels))


def onnx_runs_on_gpu() -> bool:
    """Whether onnxruntime here has its CUDA provider (the onnxruntime-gpu package)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def onnx_session(path: str, threads: int, device: str = "cpu") -> Any:
    """An onnxruntime session of ``path`` with ``threads`` intra-op threads that stop spinning
    when a run returns; on ``cuda:<id>`` through onnxruntime's CUDA provider (the
    onnxruntime-gpu package in place of onnxruntime), else an error saying so."""
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
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if not onnx_runs_on_gpu():
            raise RuntimeError(
                "an ONNX model on the GPU needs onnxruntime's CUDA provider: install "
                "onnxruntime-gpu in place of onnxruntime, or serve it with --target ngc"
            )
        device_id = int(device.partition(":")[2] or 0)
        providers = [("CUDAExecutionProvider", {"device_id": device_id})]
    return ort.InferenceSession(path, options, providers=providers)


def onnx_runner(path: str, threads: int, device: str = "cpu") -> Runner:
    """An ONNX model with one input, every output in the graph's order, on ``device``. On a GPU
    the input is bound in place on the device; the outputs come back through the host (the
    onnxruntime API hands no device buffers to torch), then to the device."""
    import torch

    session = onnx_session(path, threads, device)
    (model_input,) = session.get_inputs()
    names = [o.name for o in session.get_outputs()]

    if device.startswith("cuda"):
        device_id = int(device.partition(":")[2] or 0)

        def run_on_gpu(pixels: Any) -> list[Any]:
            x = as_batch(pixels, device)
            binding = session.io_binding()
            element = np.dtype(str(x.dtype).removeprefix("torch."))
            binding.bind_input(
                model_input.name, "cuda", device_id, element, tuple(x.shape), x.data_ptr()
            )
            for name in names:
                binding.bind_output(name, "cuda", device_id)
            torch.cuda.current_stream(device).synchronize()  # x written before ORT reads it
            session.run_with_iobinding(binding)
            outputs = binding.copy_outputs_to_cpu()
            return [torch.from_numpy(o).to(device) for o in outputs]

        return run_on_gpu

    def run(pixels: Any) -> list[Any]:
        x = pixels.numpy(force=True) if isinstance(pixels, torch.Tensor) else pixels
        return [torch.from_numpy(o) for o in session.run(names, {model_input.name: x})]

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
    import torch

    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        precision = "fp32"  # the caller logs that bf16 was asked for
    compiled = core.compile_model(path, "CPU", openvino_config(threads, precision))
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(pixels: Any) -> list[Any]:
        x = pixels.numpy(force=True) if isinstance(pixels, torch.Tensor) else pixels
        result = request.infer({0: np.ascontiguousarray(x)})
        return [torch.from_numpy(np.array(result[o])) for o in outputs]

    return run, precision


@dataclass(frozen=True)
class Loaded:
    """A network ready to run: the runner, the engine, precision and device it runs on, and why
    it is not the one asked for (None when it is)."""

    run: Runner
    engine: str
    precision: str
    fallback: str | None = None
    device: str = "cpu"


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


def _torch_module(params: DnnParams, device: str) -> Any:
    import torch

    if params.model_format == "torchscript":
        return torch.jit.load(str(params.model_file), map_location=device).eval()
    from cvserve.models.zoo import build_dnn

    return build_dnn(params)


def _load(
    params: DnnParams,
    engine: str,
    names: Sequence[str] | None,
    threads: int | None,
    device: str,
) -> Loaded:
    gpu = device.startswith("cuda")
    if engine == "tensorrt":
        raise RuntimeError("TensorRT runs on the NGC target's GPU (repo build --target ngc)")
    if engine == "onnxruntime":
        run = onnx_runner(_onnx_file(params), params.torch_threads, device)
        return Loaded(run, engine, "fp32", device=device)
    if engine == "openvino":
        if gpu:
            raise RuntimeError("OpenVINO runs on the CPU here, not on a CUDA GPU")
        run, precision = openvino_runner(_onnx_file(params), params.torch_threads, params.precision)
        reason = None
        if precision != params.precision:
            reason = f"{params.precision} asked for, but this CPU has no BF16: running fp32"
        return Loaded(run, engine, precision, reason)
    precision, reason = params.precision, None
    if precision in REDUCED and not gpu:
        # Reduced precision on the CPU is OpenVINO's bf16; torch runs fp32 there.
        precision, reason = "fp32", f"{params.precision} asked for on the CPU: torch runs fp32"
    own_module = params.model_format is None  # cvserve's modules are fp32: cast the input
    run = torch_runner(
        _torch_module(params, device),
        threads,
        names,
        device=device,
        precision=precision,
        channels_last=engine == "torch_channels_last",
        cast_input=own_module or precision != "fp32",
        cuda_graphs=gpu,
    )
    return Loaded(run, engine, precision, reason, device)


def load_engine(
    params: DnnParams,
    output_names: Sequence[str] | None = None,
    set_threads: bool = True,
    device: str = "cpu",
) -> Loaded:
    """The stage's network on its engine, on ``device`` (``"cpu"`` or ``"cuda:<id>"``). An engine
    that cannot load the model (an op it lacks, a detector that does not export to ONNX, a
    package missing, a CPU-only engine on a GPU) falls back to the model's own engine, with the
    reason logged and returned — a stage never dies of its engine choice. ``set_threads=False``
    leaves torch's per-process thread count as it is (a test process)."""
    threads = params.torch_threads if set_threads else None
    engine = params.chosen_engine
    natural = params.own_engine
    try:
        loaded = _load(params, engine, output_names, threads, device)
    except Exception as exc:  # any engine's own error type: the fallback is the point
        if engine == natural:
            raise
        reason = f"{engine} cannot run {params.label}: {type(exc).__name__}: {exc}"
        reason = reason.splitlines()[0][:300] + f"; running on {natural}"
        own = _load(params, natural, output_names, threads, device)
        loaded = dataclasses.replace(own, fallback=reason)
    if loaded.fallback:
        log.warning("%s", loaded.fallback)
    return loaded


def load_runner(
    params: DnnParams,
    output_names: Sequence[str] | None = None,
    set_threads: bool = True,
    device: str = "cpu",
) -> Runner:
    """The runner of a DNN stage's network (`load_engine`; ``output_names``: a TorchScript
    dict's keys)."""
    return load_engine(params, output_names, set_threads, device).run
