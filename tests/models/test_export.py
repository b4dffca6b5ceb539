"""Exported models (TorchScript in torch, ONNX in onnxruntime) match the eager model on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cvserve.models.export import ExportError, example_input, export, input_name
from cvserve.models.zoo import build_model

# Small members of every task keep CI fast; the big ones share their code paths.
ARCHS = [
    "mobilenet_v3_small",
    "deeplabv3_mobilenet_v3_large",
    "ssdlite320_mobilenet_v3_large",
    "depth_resnet18",
    "embed_resnet18",
]


def eager(model: torch.nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(x)
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def assert_close(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype
        scale = max(float(np.abs(e).max()), 1e-30)
        np.testing.assert_allclose(g, e, atol=1e-4 * scale, rtol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_torchscript_matches_eager(arch: str, tmp_path: Path) -> None:
    model = build_model(arch)
    path = export(model, arch, "torchscript", tmp_path)
    loaded = torch.jit.load(str(path))
    x = example_input(arch, batch=3)  # another batch size than the trace's
    with torch.no_grad():
        out = loaded(x)
    assert_close([o.numpy() for o in (out if isinstance(out, tuple) else (out,))], eager(model, x))


@pytest.mark.parametrize("arch", [a for a in ARCHS if not a.startswith("ssd")])
def test_onnx_matches_eager_in_onnxruntime(arch: str, tmp_path: Path) -> None:
    model = build_model(arch)
    path = export(model, arch, "onnx", tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = example_input(arch, batch=3)
    assert_close(session.run(None, {input_name(): x.numpy()}), eager(model, x))


def test_detectors_refuse_onnx(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="TorchScript"):
        export(build_model("bright_region"), "bright_region", "onnx", tmp_path)
