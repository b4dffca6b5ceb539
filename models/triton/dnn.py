"""Triton adapter of a DNN stage: any `models.runners` network on its engine (named, or chosen
by `models.engine_choice`) on this instance's device, batch in, its tensors out (and, when
profiling asks, its own time: `models.triton.base.OwnTimes`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cvserve.models.devices import instance_device, release
from cvserve.models.engine_choice import load_chosen
from cvserve.models.params import DnnParams
from cvserve.models.part_times import PartTimes
from cvserve.models.triton.base import (
    OwnTimes,
    first_input,
    in_version_folder,
    input_names,
    max_batch_size,
    output_names,
    run_batched,
    stage_params,
)


class TritonPythonModel:
    """Input: the preprocessed batch (N, *dims), on the host or this instance's GPU; outputs:
    the network's, in config order (the model's own order and names), on the same device."""

    def initialize(self, args: dict[str, str]) -> None:
        params = stage_params(args, DnnParams)
        if params.model_file:
            params = replace(params, model_file=in_version_folder(args, params.model_file))
        self.input_name = input_names(args)[0]
        self.device = instance_device(args)
        self.own_times = OwnTimes(args, "inference", self.device)
        self.output_names = self.own_times.others(output_names(args))
        dims, dtype = first_input(args)
        # No engine named: the fastest measured on this device (`models.engine_choice`).
        self.run = load_chosen(
            params, self.output_names, dims, max_batch_size(args), dtype, device=self.device
        ).run

    def _infer(self, pixels: Any) -> dict[str, Any]:
        outputs = self.run(pixels)
        return dict(zip(self.output_names, outputs, strict=True))

    def execute(self, requests: list[Any]) -> list[Any]:
        return self.own_times.around(requests, self._batched, self.input_name)

    def _batched(self, requests: list[Any], times: PartTimes) -> list[Any]:
        return run_batched(requests, self.input_name, self._infer, self.device, times)

    def finalize(self) -> None:
        self.run = None  # the network and its CUDA graphs go with it
        release(self.device)
