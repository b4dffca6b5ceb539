"""Triton adapter of a postprocess stage: a `models.postprocessor.Postprocessor` per stage.

A Triton batch is postprocessed in one call where the function allows it, else request by
request (outputs such as masks at original size differ between requests):
`models.triton.base.postprocessed_responses`. It runs on this instance's device: on a GPU the
DNN's outputs stay there and only the answers cross to the host. An exception (a user
function's too) becomes that request's error response; the model keeps serving. When profiling
asks, each answer also carries the stage's own time (`models.triton.base.OwnTimes`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from cvserve.models.devices import instance_device, on_device
from cvserve.models.params import PostprocessParams
from cvserve.models.part_times import PartTimes
from cvserve.models.postprocessor import Postprocessor
from cvserve.models.repository.config import config_tensors
from cvserve.models.triton.base import (
    OwnTimes,
    exception_response,
    in_version_folder,
    input_names,
    input_tensor,
    postprocessed_responses,
    stage_params,
)
from cvserve.pipelines.variants import TO_DEVICE


class TritonPythonModel:
    """Inputs and outputs as the model config declares them (the spec's); answers on the host."""

    def initialize(self, args: dict[str, str]) -> None:
        params = stage_params(args, PostprocessParams)
        if params.path:
            params = replace(params, path=in_version_folder(args, params.path))
        self.input_names = input_names(args)
        self.device = instance_device(args)
        self.own_times = OwnTimes(args, "postprocess", self.device)
        declared = config_tensors(json.loads(args["model_config"])["output"])
        outputs = [t for t in declared if t.name != self.own_times.name]
        self.output_names = [t.name for t in outputs]
        self.postprocess = Postprocessor(params, self.input_names, outputs)

    def execute(self, requests: list[Any]) -> list[Any]:
        return self.own_times.around(requests, self._postprocess, self.input_names[0])

    def _postprocess(self, requests: list[Any], times: PartTimes) -> list[Any]:
        taken = [{n: input_tensor(r, n) for n in self.input_names} for r in requests]
        times.mark_work()  # taking the inputs from Triton
        inputs: list[dict[str, Any]] = []
        refused: dict[int, Any] = {}  # request index -> its error response
        for index, tensors in enumerate(taken):
            try:
                inputs.append({n: on_device(t, self.device, n) for n, t in tensors.items()})
            except ValueError as exc:  # a tensor on another GPU: this request's error
                refused[index] = exception_response(exc)
        times.mark(TO_DEVICE)  # the inputs that came from the host are on this device
        answered = iter(postprocessed_responses(self.postprocess, inputs, self.output_names, times))
        return [refused[i] if i in refused else next(answered) for i in range(len(requests))]
