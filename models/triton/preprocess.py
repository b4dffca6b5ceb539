"""Triton adapter of the preprocessing stage: encoded image bytes → normalised tensors (+ META).

Outputs follow the model config: the pixels, and META when the config declares a second output.
The backend is `PreprocessParams.backend` (default ``dali``); the device is the spec's.
When the config also declares ``PREPROCESS_TIMES`` (`pipelines.variants.with_preprocess_times`),
DALI runs as three timed pipelines (`preprocess.dali_steps`, same output) and each image gets
int64 [3]: the ns its Triton batch spent decoding, resizing + cropping, normalizing. Without it,
the fused pipeline runs and nothing is timed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from cvserve.models.devices import instance_device, settled
from cvserve.models.part_times import PartTimes
from cvserve.models.triton.base import (
    OwnTimes,
    exception_response,
    input_names,
    input_tensor,
    max_batch_size,
    output_names,
    output_tensor,
    stage_params,
)
from cvserve.pipelines.variants import PREPROCESS_TIMES
from cvserve.preprocess.backends import make_preprocessor
from cvserve.preprocess.preprocessor import stack_results
from cvserve.preprocess.spec import PreprocessError, PreprocessParams


class TritonPythonModel:
    """Input ``IMAGE`` uint8 (N, L) zero-padded bytes; outputs (N, *spec.output_shape) and, if
    configured, META (N, 6) float32 and PREPROCESS_TIMES (N, 3) int64."""

    def initialize(self, args: dict[str, str]) -> None:
        params = stage_params(args, PreprocessParams)
        spec = params.spec
        self.input_name = input_names(args)[0]
        self.device = instance_device(args) if spec.device == "gpu" else "cpu"
        self.own_times = OwnTimes(args, "preprocess", self.device)
        names = self.own_times.others(output_names(args))
        self.times = PREPROCESS_TIMES.name in names
        self.output_names = [n for n in names if n != PREPROCESS_TIMES.name][:2]  # PIXELS[, META]
        backend = params.backend
        options: dict[str, Any] = {}
        if self.device != "cpu" and backend == "dali":
            options["device_id"] = int(self.device.partition(":")[2])
        if self.times:
            if backend != "dali":
                raise ValueError(
                    f"{PREPROCESS_TIMES.name} needs the dali backend (it times DALI's steps), "
                    f"not {backend!r}"
                )
            options["step_times"] = True
        self.preprocessor = make_preprocessor(
            spec,
            backend,
            max_batch_size=max(1, max_batch_size(args)),
            threads=params.num_threads,
            **options,
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return self.own_times.around(requests, self._preprocess, self.input_name)

    def _preprocess(self, requests: list[Any], times: PartTimes) -> list[Any]:
        """The batch's answers; all of it is this stage's work (``times`` marks no copy: the
        encoded bytes stay on the host, DALI's `mixed` decoder takes them there)."""
        per_request = [input_tensor(r, self.input_name).cpu().numpy() for r in requests]
        batch = [image for images in per_request for image in images]
        if self.times:
            results, step_ns = self.preprocessor.timed(batch)
        else:
            results = self.preprocessor(batch)
        responses = []
        start = 0
        for images in per_request:
            mine = results[start : start + len(images)]
            start += len(images)
            try:
                outputs = stack_results(mine)
            except PreprocessError as exc:  # INVALID_ARG: the client's dead letter, no retry
                responses.append(exception_response(exc))
                continue
            tensors = [
                output_tensor(n, v) for n, v in zip(self.output_names, outputs, strict=False)
            ]
            if self.times:
                steps = np.tile(step_ns, (len(images), 1))
                tensors.append(output_tensor(PREPROCESS_TIMES.name, steps))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        settled(self.device)
        return responses

    def finalize(self) -> None:
        self.preprocessor.close()
