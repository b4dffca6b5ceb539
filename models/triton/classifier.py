"""Triton adapter of a torchvision classifier: (N, 3, H, W) float → (N, C) logits."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from cvserve.models.triton.base import input_names, output_names, run_batched, stage_params
from cvserve.models.zoo import build_classifier


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = stage_params(args)
        torch.set_num_threads(int(params.get("torch_threads", 1)))
        self.model = build_classifier(
            params["arch"], params["num_classes"], params["seed"], params.get("weights")
        )
        self.input_name = input_names(args)[0]
        self.output_name = output_names(args)[0]

    def _infer(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(pixels).float())
        return {self.output_name: logits.numpy().astype(np.float32)}

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.input_name, self._infer)
