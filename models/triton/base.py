"""Shared wiring of cvserve's Triton python-backend adapters.

Only importable inside a Triton python-backend stub (it imports ``triton_python_backend_utils``).
Adapters stay thin: they gather a batch from Triton requests, call a package function tested
without Triton, and answer each request exactly once — errors as that request's error response.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import triton_python_backend_utils as pb_utils

from cvserve.models.repository.config import STAGE_PARAMETER
from cvserve.pipelines.spec import StageParams, dtype_from_triton

P = TypeVar("P", bound=StageParams)


def stage_params(args: dict[str, str], kind: type[P]) -> P:
    """The stage's typed params (``kind``), parsed from its model config."""
    config = json.loads(args["model_config"])
    return kind.from_json(config["parameters"][STAGE_PARAMETER]["string_value"])


def version_folder(args: dict[str, str]) -> Path:
    """The model's version folder, where files a stage's params name relatively are."""
    return Path(args["model_repository"]) / str(args["model_version"])


def in_version_folder(args: dict[str, str], path: str) -> str:
    """``path`` as is when absolute, else inside the model's version folder."""
    return path if Path(path).is_absolute() else str(version_folder(args) / path)


def input_names(args: dict[str, str]) -> list[str]:
    """Input tensor names in config order (the spec's order)."""
    return [i["name"] for i in json.loads(args["model_config"])["input"]]


def output_names(args: dict[str, str]) -> list[str]:
    """Output tensor names in config order (the spec's order)."""
    return [o["name"] for o in json.loads(args["model_config"])["output"]]


def max_batch_size(args: dict[str, str]) -> int:
    return int(json.loads(args["model_config"])["max_batch_size"])


def first_input(args: dict[str, str]) -> tuple[tuple[int, ...], str]:
    """The first input's dims (no batch axis) and NumPy dtype name, from the model config."""
    spec = json.loads(args["model_config"])["input"][0]
    return tuple(int(d) for d in spec["dims"]), dtype_from_triton(spec["data_type"])


def error_response(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


def run_batched(
    requests: list[Any],
    input_name: str,
    compute: Callable[[np.ndarray], dict[str, np.ndarray]],
) -> list[Any]:
    """Concatenate ``input_name`` over ``requests``, run ``compute`` once, split the outputs back.

    If ``compute`` raises, every request of the batch gets the error (none is dropped).
    """
    arrays = [pb_utils.get_input_tensor_by_name(r, input_name).as_numpy() for r in requests]
    counts = [len(a) for a in arrays]
    try:
        outputs = compute(np.concatenate(arrays) if len(arrays) > 1 else arrays[0])
    except Exception as exc:
        return [error_response(f"{type(exc).__name__}: {exc}") for _ in requests]
    responses = []
    start = 0
    for count in counts:
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + count]))
            for name, value in outputs.items()
        ]
        responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        start += count
    return responses
