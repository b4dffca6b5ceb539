"""Triton adapter of classification postprocessing: logits → top-k labels and scores."""

from __future__ import annotations

from typing import Any

import numpy as np
from cvserve.models.postprocess import top_k
from cvserve.models.triton.base import input_names, output_names, run_batched, stage_params


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.k = int(stage_params(args)["top_k"])
        self.input_name = input_names(args)[0]
        self.labels_name, self.scores_name = output_names(args)

    def _top_k(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        labels, scores = top_k(logits, self.k)
        return {self.labels_name: labels, self.scores_name: scores}

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.input_name, self._top_k)
