"""The DNN engines as the served DNN stage opens them (`models.runners`): onnxruntime sessions,
OpenVINO properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cvserve.models import runners
from cvserve.models.runners import onnx_runner, onnx_session, openvino_config, openvino_runner


def tiny_onnx(path: Path) -> Path:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    torch.onnx.export(
        model,
        torch.zeros(1, 3, 8, 8),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}},
        dynamo=False,
    )
    return path


def test_intra_op_threads_stop_spinning_when_a_run_returns(tmp_path: Path) -> None:
    # Spinning threads between runs took the cores from DALI in the same server (README:
    # served classify mobilenet_v3_small 232-239 -> 277-288 img/s without it).
    session = onnx_session(str(tiny_onnx(tmp_path / "tiny.onnx")), threads=2)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"


def test_runner_returns_every_output_for_a_batch(tmp_path: Path) -> None:
    run = onnx_runner(str(tiny_onnx(tmp_path / "tiny.onnx")), threads=2)
    (y,) = run(np.ones((3, 3, 8, 8), np.float32))  # NumPy in, torch out
    assert y.shape == (3, 4, 6, 6) and y.dtype == torch.float32
    (same,) = run(torch.ones((3, 3, 8, 8)))
    assert torch.equal(same, y)


def test_openvino_pins_its_threads_only_when_they_span_every_core(monkeypatch) -> None:
    monkeypatch.setattr(runners, "usable_cores", lambda: 2)
    assert openvino_config(2, "bf16") == {
        "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 2, "ENABLE_CPU_PINNING": True,
    }  # fmt: skip
    one_of_two = openvino_config(1, "fp32")  # another instance shares the machine
    assert one_of_two["ENABLE_CPU_PINNING"] is False
    assert one_of_two["INFERENCE_PRECISION_HINT"] == "f32"


def test_openvino_runner_compiles_with_those_properties(tmp_path: Path) -> None:
    run, precision = openvino_runner(str(tiny_onnx(tmp_path / "tiny.onnx")), 1, "fp32")
    (out,) = run(np.ones((2, 3, 8, 8), np.float32))
    assert precision == "fp32" and out.shape == (2, 4, 6, 6)
