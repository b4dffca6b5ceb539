"""Triton adapter of a postprocess stage: one `models.postprocess.FUNCTIONS` entry per stage.

Runs request by request (outputs such as masks at original size differ between requests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from cvserve.models.params import PostprocessParams
from cvserve.models.postprocess import FUNCTIONS
from cvserve.models.triton.base import error_response, input_names, output_names, stage_params


class TritonPythonModel:
    """Inputs in config order are the function's positional arguments; `PostprocessParams.options`
    its keywords; its results fill the outputs in config order."""

    def initialize(self, args: dict[str, str]) -> None:
        params = stage_params(args, PostprocessParams)
        self.function = FUNCTIONS[params.function]
        self.options = params.options()
        self.input_names = input_names(args)
        self.output_names = output_names(args)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            arrays = [
                pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names
            ]
            try:
                results = self.function(*arrays, **self.options)
            except Exception as exc:
                responses.append(error_response(f"{type(exc).__name__}: {exc}"))
                continue
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value))
                for name, value in zip(self.output_names, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
