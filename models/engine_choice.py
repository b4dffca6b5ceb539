"""The engine a DNN stage runs on when its pipeline names none: the fastest on this machine
within the accuracy bound, chosen from a measurement stored per machine (measured when absent).

A measurement runs every engine the model can run on the stage's device (`candidates`: on the
CPU torch, channels-last, onnxruntime, OpenVINO; on a GPU torch and channels-last, and
onnxruntime where its CUDA provider is installed) on a seeded batch of the stage's input shape
and batch size, with the stage's threads: images/s (the better of two short passes) and the
largest absolute difference from the model's own engine in fp32 on the same device, relative to
the largest reference value. An engine is *within bound* when that relative difference is at
most `FP32_BOUND` (`BOUNDS` for reduced precision, offered only where the pipeline allows it).
The choice is the fastest within bound; another engine than the model's own only when it is
more than `MARGIN` faster (this machine's noise between two passes is about that).

Stored per machine (`deploy.measurements`, kind ``engines``), keyed by network, input shape,
batch, threads, allowed precision and, on a GPU, the GPU's name; `cvserve bench engines` writes
the same entries. Processes loading the same network at once measure it once (the store's
lock).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvserve.deploy import measurements
from cvserve.deploy.host import cuda_available
from cvserve.models.fusion import fuse_stages
from cvserve.models.params import ENGINES, ENGINES_FOR, DnnParams
from cvserve.models.runners import Loaded, load_engine, onnx_runs_on_gpu
from cvserve.pipelines.spec import PipelineSpec, StageSpec
from cvserve.pipelines.variants import is_fused, unfused

KIND = "engines"  # the `deploy.measurements` store
FP32_BOUND = 1e-3  # max |diff| / max |reference|: fp32 kernels reorder sums, nothing more
BF16_BOUND = 5e-2  # bf16 keeps 8 mantissa bits
FP16_BOUND = 1e-2  # fp16 keeps 11
BOUNDS = {"fp32": FP32_BOUND, "fp16": FP16_BOUND, "bf16": BF16_BOUND}
# What runs on a CUDA device: torch, and onnxruntime where its CUDA provider is installed.
GPU_ENGINES = ("torch", "torch_channels_last", "onnxruntime")
MARGIN = 0.05  # an engine replaces the model's own only when this much faster
PASS_S = 0.4  # seconds per timed pass (two passes, after a warm-up call)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measured:
    """One engine on one network: images/s and its relative difference from the reference."""

    engine: str
    precision: str
    images_per_s: float
    rel_diff: float
    within_bound: bool
    ran_on: str  # engine/precision that actually ran (a fallback shows here)


@dataclass(frozen=True)
class Choice:
    """The engine chosen, why, and the measurement it was chosen from."""

    engine: str
    precision: str
    reason: str
    measured: tuple[Measured, ...]


def candidates(params: DnnParams, device: str = "cpu") -> list[tuple[str, str]]:
    """(engine, precision) pairs the model can run on ``device``; reduced precision only when
    ``params`` allows it (bf16 through OpenVINO on the CPU; fp16 / bf16 through torch on a
    GPU)."""
    engines = [e for e in ENGINES_FOR[params.model_format or "arch"] if e in ENGINES]
    if device.startswith("cuda"):
        gpu_engines = GPU_ENGINES if onnx_runs_on_gpu() else GPU_ENGINES[:2]
        engines = [e for e in engines if e in gpu_engines]
        pairs = [(e, "fp32") for e in engines]
        if params.precision != "fp32":
            pairs += [(e, params.precision) for e in engines if e.startswith("torch")]
        return pairs
    pairs = [(e, "fp32") for e in engines]
    if params.precision == "bf16":
        pairs.append(("openvino", "bf16"))
    return pairs


def device_name(device: str) -> str:
    """What a measurement on ``device`` is keyed by: the GPU's name (``cuda:0`` of one machine is
    another GPU elsewhere); ``cpu`` as is."""
    if not device.startswith("cuda"):
        return device
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def network_key(params: DnnParams, shape: Sequence[int], batch: int, device: str = "cpu") -> str:
    """The stored entry's key. Weights and seed do not change an engine's speed; a model file is
    named by its content; a GPU by its name (a CPU entry names no device: the store is this
    machine's)."""
    network = (
        f"file:{_file_digest(str(params.model_file))}"
        if params.model_file
        else f"arch:{params.arch}:classes={params.num_classes}"
    )
    dims = "x".join(str(d) for d in shape)
    key = (
        f"{network}|input={dims}|batch={batch}|threads={params.torch_threads}"
        f"|allowed={params.precision}"
    )
    return key if device == "cpu" else f"{key}|device={device_name(device)}"


def _file_digest(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _as_measured(value: Any) -> tuple[Measured, ...]:
    return tuple(Measured(**m) for m in value)


def _as_value(measured: Sequence[Measured]) -> list[dict[str, Any]]:
    """What the store keeps of ``measured`` (JSON)."""
    return [dataclasses.asdict(m) for m in measured]


def record(
    params: DnnParams,
    shape: Sequence[int],
    batch: int,
    measured: Sequence[Measured],
    device: str = "cpu",
) -> Path:
    """Store ``measured`` for this network on this machine (replacing what was there)."""
    return measurements.put(KIND, network_key(params, shape, batch, device), _as_value(measured))


def host(outputs: Sequence[Any]) -> list[np.ndarray]:
    """A runner's outputs (torch on any device, or NumPy) as NumPy arrays on the host."""
    return [o.numpy(force=True) if hasattr(o, "numpy") else np.asarray(o) for o in outputs]


def synchronized(run: Any, device: str) -> Any:
    """``run`` that returns when its work on ``device`` is done (a GPU runs asynchronously:
    timing the launch is not timing the work); ``run`` itself on the CPU."""
    if not device.startswith("cuda"):
        return run
    import torch

    def done(x: Any) -> Any:
        out = run(x)
        torch.cuda.synchronize(device)
        return out

    return done


def images_per_s(run: Any, x: Any, pass_s: float = PASS_S, min_calls: int = 2) -> float:
    """``run(x)``'s images/s: the better of two passes of at least ``pass_s`` seconds and
    ``min_calls`` calls each, after one warm-up call (noise only ever slows a pass down).
    ``run`` must return when its work is done (`synchronized`)."""
    run(x)
    rates = []
    for _ in range(2):
        calls, start = 0, time.perf_counter()
        while calls < min_calls or time.perf_counter() - start < pass_s:
            run(x)
            calls += 1
        rates.append(calls * len(x) / (time.perf_counter() - start))
    return max(rates)


def rel_diff(got: Sequence[Any], reference: Sequence[np.ndarray]) -> float:
    """Largest |got - reference| over every output (torch or NumPy), relative to the largest
    |reference|."""
    got = host(got)
    if any(g.shape != r.shape for g, r in zip(got, reference, strict=True)):
        return float("inf")  # a different number of detections: not the same answer
    scale = max((float(np.max(np.abs(r))) for r in reference if r.size), default=0.0)
    diff = max(
        (
            float(np.max(np.abs(g.astype(np.float64) - r)))
            for g, r in zip(got, reference, strict=True)
            if r.size
        ),
        default=0.0,
    )
    return diff / scale if scale > 0 else diff


def measure(
    params: DnnParams,
    shape: Sequence[int],
    batch: int,
    output_names: Sequence[str] | None = None,
    dtype: str = "float32",
    device: str = "cpu",
) -> tuple[Measured, ...]:
    """Every candidate engine on ``device`` on a seeded (``batch``, *``shape``) batch of
    ``dtype`` (the stage's input, on that device), with the stage's threads."""
    import torch

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, *shape)).astype(dtype))
    x = x.to(device)
    threads_before = torch.get_num_threads()
    try:
        reference_params = dataclasses.replace(params, engine=params.own_engine, precision="fp32")
        reference_run = load_engine(reference_params, output_names, device=device).run
        reference = [r.astype(np.float64) for r in host(reference_run(x))]
        out = []
        for engine, precision in candidates(params, device):
            try:
                one = _measure_one(params, engine, precision, output_names, x, reference, device)
                out.append(one)
            except Exception as exc:  # it loads but cannot run this input: not a candidate
                why = f"{engine} failed on this input: {type(exc).__name__}: {exc}"
                out.append(Measured(engine, precision, 0.0, float("inf"), False, why[:300]))
        return tuple(out)
    finally:
        torch.set_num_threads(threads_before)


def _measure_one(
    params: DnnParams,
    engine: str,
    precision: str,
    output_names: Sequence[str] | None,
    x: Any,
    reference: list[np.ndarray],
    device: str = "cpu",
) -> Measured:
    loaded = load_engine(
        dataclasses.replace(params, engine=engine, precision=precision),
        output_names,
        device=device,
    )
    if loaded.fallback:  # it cannot load this model: not a candidate, and why
        return Measured(engine, precision, 0.0, float("inf"), False, loaded.fallback)
    rate = images_per_s(synchronized(loaded.run, device), x)
    diff = rel_diff(loaded.run(x), reference)
    bound = BOUNDS[loaded.precision]
    return Measured(
        engine,
        precision,
        round(rate, 2),
        diff,
        diff <= bound,
        f"{loaded.engine}/{loaded.precision}",
    )


def pick(params: DnnParams, measured: Sequence[Measured]) -> tuple[Measured, str]:
    """The fastest within bound; the model's own engine unless another beats it by `MARGIN`."""
    own = params.own_engine
    usable = [m for m in measured if m.within_bound]
    base = next((m for m in usable if m.engine == own and m.precision == "fp32"), None)
    best = max(usable, key=lambda m: m.images_per_s, default=base)
    if best is None:
        raise RuntimeError(f"no engine ran {params.label} within bound")
    if base is not None and best.images_per_s <= base.images_per_s * (1 + MARGIN):
        best = base
    table = ", ".join(f"{m.engine}/{m.precision} {m.images_per_s:g}" for m in measured)
    return best, f"fastest within bound of {table} img/s"


def choose_engine(
    params: DnnParams,
    shape: Sequence[int],
    batch: int,
    output_names: Sequence[str] | None = None,
    dtype: str = "float32",
    device: str = "cpu",
) -> Choice:
    """The engine for ``params`` at (``batch``, *``shape``) of ``dtype`` on ``device`` of this
    machine: from the store, or measured now and stored (once, under the store's lock). -1 dims
    read 224."""
    shape = tuple(224 if d < 0 else int(d) for d in shape)
    key = network_key(params, shape, batch, device)
    value, source = measurements.get(KIND, key), "stored"
    if value is None:
        with measurements.locked(KIND) as path:  # another process may be measuring it: wait
            value = measurements.get(KIND, key)
            if value is None:
                value = _as_value(measure(params, shape, batch, output_names, dtype, device))
                measurements.put_locked(path, key, value)
                source = "measured now"
    measured = _as_measured(value)
    best, why = pick(params, measured)
    reason = f"{best.engine}/{best.precision}, {why} ({source}, {measurements.store_file(KIND)})"
    log.info("%s: engine %s", params.label, reason)
    return Choice(best.engine, best.precision, reason, tuple(measured))


def stage_device(stage: StageSpec) -> str:
    """The torch device a stage's first instance runs on: ``cuda:0`` for a GPU stage."""
    return "cuda:0" if stage.device == "gpu" else "cpu"


def stage_choice(stage: StageSpec) -> Choice:
    """`choose_engine` for a DNN stage of a spec, at its input and max batch size, on its
    device."""
    params = stage.params_as(DnnParams)
    (pixels,) = stage.inputs
    return choose_engine(
        dataclasses.replace(params, engine=None),
        pixels.dims,
        stage.batching.max_batch_size,
        [t.name for t in stage.outputs],
        str(pixels.numpy_dtype),
        stage_device(stage),
    )


def with_chosen_engine(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` with its DNN stage's engine named: the one it names, else the measured choice
    (what the served stage would choose at load), so reports can say which engine ran."""
    if is_fused(spec):  # the fused model's DNN, fused again
        return fuse_stages(with_chosen_engine(unfused(spec)))
    stage = spec.stage_by_role("inference")
    if not isinstance(stage.params, DnnParams) or stage.params.engine is not None:
        return spec
    if stage.device == "gpu" and not cuda_available():
        return spec  # measured where it is served: a GPU machine
    params = stage.params
    choice = stage_choice(stage)
    named = dataclasses.replace(params, engine=choice.engine, precision=choice.precision)
    stages = tuple(dataclasses.replace(s, params=named) if s is stage else s for s in spec.stages)
    return dataclasses.replace(spec, stages=stages)


def load_chosen(
    params: DnnParams,
    output_names: Sequence[str] | None,
    shape: Sequence[int],
    batch: int,
    dtype: str = "float32",
    set_threads: bool = True,
    device: str = "cpu",
) -> Loaded:
    """`models.runners.load_engine` of ``params`` on ``device``, its engine chosen here when it
    names none (the choice's reason logged); an engine named is loaded as it is."""
    if params.engine is None:
        try:
            choice = choose_engine(params, shape, batch, output_names, dtype, device)
        except Exception as exc:  # no measurement (a read-only store, ...): the model's own
            log.warning("%s: no engine measured (%s); running on %s", params.label, exc,
                        params.own_engine)  # fmt: skip
            return load_engine(params, output_names, set_threads, device)
        params = dataclasses.replace(params, engine=choice.engine, precision=choice.precision)
    return load_engine(params, output_names, set_threads, device)
