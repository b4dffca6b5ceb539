"""Triton adapter of a postprocess stage: a `models.postprocessor.Postprocessor` per stage.

Runs request by request (outputs such as masks at original size differ between requests), on
this instance's device: on a GPU the DNN's outputs stay there and only the answers cross to the
host. An exception (a user function's too) becomes that request's error response; the model
keeps serving.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import triton_python_backend_utils as pb_utils

from cvserve.models.devices import instance_device, on_device
from cvserve.models.params import PostprocessParams
from cvserve.models.postprocessor import Postprocessor
from cvserve.models.repository.config import config_tensors
from cvserve.models.triton.base import (
    error_response,
    in_version_folder,
    input_names,
    input_tensor,
    output_tensor,
    stage_params,
)


class TritonPythonModel:
    """Inputs and outputs as the model config declares them (the spec's); answers on the host."""

    def initialize(self, args: dict[str, str]) -> None:
        params = stage_params(args, PostprocessParams)
        if params.path:
            params = replace(params, path=in_version_folder(args, params.path))
        self.input_names = input_names(args)
        self.device = instance_device(args)
        outputs = config_tensors(json.loads(args["model_config"])["output"])
        self.postprocess = Postprocessor(params, self.input_names, outputs)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                tensors = {
                    n: on_device(input_tensor(request, n), self.device, n) for n in self.input_names
                }
                results = self.postprocess(tensors)
                out = [output_tensor(n, v.cpu()) for n, v in results.items()]
            except Exception as exc:
                responses.append(error_response(f"{type(exc).__name__}: {exc}"))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=out))
        return responses
