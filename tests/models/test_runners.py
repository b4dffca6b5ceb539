"""onnxruntime sessions as the served DNN stage opens them (`models.runners.onnx_session`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cvserve.models.runners import onnx_runner, onnx_session


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
    (y,) = run(np.ones((3, 3, 8, 8), np.float32))
    assert y.shape == (3, 4, 6, 6) and y.dtype == np.float32
