"""Triton adapter of the preprocessing stage: encoded image bytes → normalised tensors via DALI."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from cvserve.models.triton.base import (
    error_response,
    input_names,
    max_batch_size,
    output_names,
    stage_params,
)
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec


class TritonPythonModel:
    """Input ``IMAGE`` uint8 (N, L) zero-padded bytes; output (N, 3, H, W) per the spec."""

    def initialize(self, args: dict[str, str]) -> None:
        params = stage_params(args)
        self.input_name = input_names(args)[0]
        self.output_name = output_names(args)[0]
        self.preprocessor = DaliPreprocessor(
            PreprocessSpec.from_dict(params["spec"]),
            max_batch_size=max(1, max_batch_size(args)),
            num_threads=int(params["num_threads"]),
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        per_request = [
            list(pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy()) for r in requests
        ]
        results = self.preprocessor([image for images in per_request for image in images])
        responses = []
        start = 0
        for images in per_request:
            mine = results[start : start + len(images)]
            start += len(images)
            errors = [r for r in mine if isinstance(r, PreprocessError)]
            if errors:
                reasons = "; ".join(
                    f"image {i}: {r.reason}"
                    for i, r in enumerate(mine)
                    if isinstance(r, PreprocessError)
                )
                responses.append(error_response(f"PreprocessError: {reasons}"))
            else:
                tensor = pb_utils.Tensor(self.output_name, np.stack(mine))
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses

    def finalize(self) -> None:
        del self.preprocessor
