"""Triton adapter of a DNN stage: any `models.architectures` DNN, batch in, its tensors out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cvserve.models.params import DnnParams
from cvserve.models.triton.base import input_names, output_names, run_batched, stage_params
from cvserve.models.zoo import build_dnn


class TritonPythonModel:
    """Input: the preprocessed batch (N, 3, H, W); outputs: the module's tensors, config order."""

    def initialize(self, args: dict[str, str]) -> None:
        params = stage_params(args, DnnParams)
        torch.set_num_threads(params.torch_threads)
        self.model = build_dnn(params)
        self.input_name = input_names(args)[0]
        self.output_names = output_names(args)

    def _infer(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = self.model(torch.from_numpy(pixels).float())
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: o.numpy() for name, o in zip(self.output_names, outputs, strict=True)}

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.input_name, self._infer)
