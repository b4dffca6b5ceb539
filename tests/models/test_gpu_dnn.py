"""The DNN on a CUDA GPU (`models.runners` with a ``cuda`` device, `models.cuda_graphs`):
against fp32 on the CPU, at fp32 and at reduced precision. Skipped without a GPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cvserve.models.cuda_graphs import bucket
from cvserve.models.engine_choice import BOUNDS, candidates, rel_diff
from cvserve.models.params import DnnParams
from cvserve.models.runners import load_engine, onnx_runs_on_gpu

GPU = "cuda:0"
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def batch(n: int, shape: tuple[int, ...] = (3, 224, 224)) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, *shape)).astype(np.float32)


def test_a_batch_runs_in_the_graph_of_the_next_power_of_two() -> None:
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 64, 65)] == [1, 2, 4, 8, 8, 16, 64, 128]


def test_a_gpu_stage_chooses_among_the_engines_that_run_there() -> None:
    params = DnnParams(arch="resnet18", precision="fp16")
    onnx = [("onnxruntime", "fp32")] if onnx_runs_on_gpu() else []  # onnxruntime-gpu only
    assert candidates(params, GPU) == [
        ("torch", "fp32"), ("torch_channels_last", "fp32"), *onnx,
        ("torch", "fp16"), ("torch_channels_last", "fp16"),
    ]  # fmt: skip
    assert ("openvino", "fp32") in candidates(params, "cpu")
    assert ("torch", "fp16") not in candidates(params, "cpu")  # reduced on the CPU: openvino bf16


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("engine", ["torch", "torch_channels_last"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_the_cuda_runner_agrees_with_fp32_on_the_cpu(engine: str, precision: str) -> None:
    params = DnnParams(arch="resnet18", num_classes=10, engine=engine, precision=precision)
    cpu_fp32 = dataclasses.replace(params, engine="torch", precision="fp32")
    (reference,) = load_engine(cpu_fp32).run(batch(5))
    loaded = load_engine(params, device=GPU)
    assert (loaded.engine, loaded.precision, loaded.device, loaded.fallback) == (
        engine, precision, GPU, None,
    )  # fmt: skip
    for n in (5, 5, 3, 8):  # a captured graph replayed, a smaller batch, a full bucket
        (got,) = loaded.run(torch.from_numpy(batch(n)).to(GPU))
        assert got.device == torch.device(GPU) and got.dtype == torch.float32
        want = reference if n == 5 else load_engine(cpu_fp32).run(batch(n))[0]
        assert rel_diff([got], [want.numpy().astype(np.float64)]) <= BOUNDS[precision]
        if precision == "fp32":
            assert torch.equal(got.argmax(1).cpu(), want.argmax(1))


@pytest.mark.gpu
@needs_gpu
def test_a_detector_that_syncs_with_the_host_runs_eagerly_on_the_gpu() -> None:
    params = DnnParams(arch="bright_region", engine="torch")
    x = batch(2, (3, 64, 64))
    want = load_engine(params).run(x)
    got = load_engine(params, device=GPU).run(x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.cpu().numpy(), w.numpy(), atol=1e-4)
