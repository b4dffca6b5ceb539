"""Triton adapter of a postprocess stage: a `models.postprocessor.Postprocessor` per stage.

Runs request by request (outputs such as masks at original size differ between requests). An
exception (a user function's too) becomes that request's error response; the model keeps serving.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from cvserve.models.params import PostprocessParams
from cvserve.models.postprocessor import Postprocessor
from cvserve.models.repository.config import config_tensors
from cvserve.models.triton.base import (
    error_response,
    in_version_folder,
    input_names,
    stage_params,
)


class TritonPythonModel:
    """Inputs and outputs as the model config declares them (the spec's)."""

    def initialize(self, args: dict[str, str]) -> None:
        params = stage_params(args, PostprocessParams)
        if params.path:
            params = replace(params, path=in_version_folder(args, params.path))
        self.input_names = input_names(args)
        outputs = config_tensors(json.loads(args["model_config"])["output"])
        self.postprocess = Postprocessor(params, self.input_names, outputs)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            tensors = {
                n: pb_utils.get_input_tensor_by_name(request, n).as_numpy()
                for n in self.input_names
            }
            try:
                results = self.postprocess(tensors)
            except Exception as exc:
                responses.append(error_response(f"{type(exc).__name__}: {exc}"))
                continue
            out = [pb_utils.Tensor(n, np.ascontiguousarray(v)) for n, v in results.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=out))
        return responses
