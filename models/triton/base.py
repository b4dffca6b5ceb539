"""Shared wiring of cvserve's Triton python-backend adapters.

Only importable inside a Triton python-backend stub (it imports ``triton_python_backend_utils``).
Adapters stay thin: they gather a batch from Triton requests, call a package function tested
without Triton, and answer each request exactly once — errors as that request's error response.
Tensors cross in and out through DLPack as torch tensors (`input_tensor`, `output_tensor`), on
the host or the GPU alike: the stage code is the same with its device a parameter
(`instance_device`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from cvserve.models.devices import on_device, settled
from cvserve.models.errors import ErrorKind, kind_of_exception
from cvserve.models.part_times import PartTimes
from cvserve.models.postprocessor import Postprocessor
from cvserve.models.repository.config import STAGE_PARAMETER
from cvserve.pipelines.spec import Role, StageParams, dtype_from_triton
from cvserve.pipelines.variants import TO_DEVICE, TO_HOST, own_times

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


def error_response(message: str, kind: ErrorKind = ErrorKind.INTERNAL) -> Any:
    """A response that fails its request with ``message`` and the Triton code of ``kind``
    (`models.errors`: the client decides retry or dead letter on that code alone)."""
    # Looked up per call: the stub defines pb_utils.TritonError only once it runs a model, not
    # while it imports model.py (an import-time lookup fails the model's load).
    code = getattr(pb_utils.TritonError, kind.triton_code)
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


def exception_response(exc: BaseException) -> Any:
    """``exc`` as its request's error: ``<type>: <reason>``, with the code of its kind
    (`models.errors.kind_of_exception`: a `PreprocessError` is INVALID_ARG)."""
    return error_response(f"{type(exc).__name__}: {exc}", kind_of_exception(exc))


def input_tensor(request: Any, name: str) -> Any:
    """Input ``name`` of ``request`` as a torch tensor where Triton put it (the host, or the GPU
    for a KIND_GPU model fed by another GPU stage), through DLPack: no copy, and none of the
    stub's NumPy conversions (they misread tensors under NumPy 2: ../shared/FINDINGS.md)."""
    return torch.from_dlpack(pb_utils.get_input_tensor_by_name(request, name).to_dlpack())


def output_tensor(name: str, value: Any) -> Any:
    """``value`` (torch on any device, or NumPy) as output ``name``, through DLPack."""
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    return pb_utils.Tensor.from_dlpack(name, tensor.contiguous())


def run_batched(
    requests: list[Any],
    input_name: str,
    compute: Callable[[Any], dict[str, Any]],
    device: str = "cpu",
    times: PartTimes | None = None,
) -> list[Any]:
    """Concatenate ``input_name`` over ``requests`` (torch, on ``device``), run ``compute`` once,
    split its outputs (torch or NumPy, batch first) back per request; ``times`` marks the
    inputs' copy onto ``device`` (`TO_DEVICE`; taking them from Triton is the stage's work).

    If ``compute`` raises, every request of the batch gets the error (none is dropped).
    """
    times = times or PartTimes.off()
    try:
        tensors = [input_tensor(r, input_name) for r in requests]
        times.mark_work()
        tensors = [on_device(t, device, input_name) for t in tensors]
        times.mark(TO_DEVICE)
        counts = [len(t) for t in tensors]
        outputs = compute(torch.cat(tensors) if len(tensors) > 1 else tensors[0])
        settled(device)
    except Exception as exc:
        return [exception_response(exc) for _ in requests]
    responses = []
    start = 0
    for count in counts:
        out = [output_tensor(name, value[start : start + count]) for name, value in outputs.items()]
        responses.append(pb_utils.InferenceResponse(output_tensors=out))
        start += count
    return responses


def postprocessed_responses(
    postprocess: Postprocessor,
    per_request: list[dict[str, Any]],
    names: list[str],
    times: PartTimes | None = None,
) -> list[Any]:
    """One response per request of ``postprocess`` on its inputs (``per_request``: torch tensors
    by name, batch first), answers on the host in ``names`` order. Where the function allows it
    (`Postprocessor.batchable`) every request goes through one call, the answers cut apart by
    row (each torch op costs microseconds: one call per Triton batch, not per request); else,
    or when that call raises, request by request, each failure that request's error.

    ``times`` marks the postprocessing and the answers' copy to the host (`TO_HOST`)."""
    times = times or PartTimes.off()
    if postprocess.batchable and len(per_request) > 1:
        try:
            joined = {n: torch.cat([r[n] for r in per_request]) for n in per_request[0]}
            computed = postprocess(joined)
            times.mark("postprocess")
            answers = {n: v.cpu() for n, v in computed.items()}
            times.mark(TO_HOST, "postprocess")
        except Exception:  # one request's inputs break it: find which, request by request
            pass
        else:
            responses, first = [], 0
            for request in per_request:
                rows = slice(first, first + len(next(iter(request.values()))))
                first = rows.stop
                out = [output_tensor(n, answers[n][rows]) for n in names]
                responses.append(pb_utils.InferenceResponse(output_tensors=out))
            times.mark("postprocess")  # the responses built
            return responses
    responses = []
    for request in per_request:
        try:
            computed = postprocess(request)
            times.mark("postprocess")
            answers = {n: v.cpu() for n, v in computed.items()}
            times.mark(TO_HOST, "postprocess")
            out = [output_tensor(n, answers[n]) for n in names]
        except Exception as exc:
            responses.append(exception_response(exc))
            continue
        responses.append(pb_utils.InferenceResponse(output_tensors=out))
    times.mark("postprocess")  # the responses built, a failed request's work
    return responses


class OwnTimes:
    """A stage served apart that reports its own work when profiling asks
    (`pipelines.variants.own_times`, declared in its config by `with_stage_times`): each answer of
    a batch in which a request asks for it also carries int64 [9], the ns that batch spent in the
    adapter's ``execute`` (CUDA events on a GPU) at ``role``'s places of `TIMED`: the copies
    ``execute`` marks (`PartTimes`), the rest its own work. Nothing is timed otherwise. What
    Triton times around it (inputs into the stub, answers out of it) is the profiler's
    hand-off."""

    def __init__(self, args: dict[str, str], role: Role, device: str) -> None:
        self.name = own_times(role).name
        self.declared = self.name in output_names(args)
        self.role = role
        self.device = device

    def others(self, names: list[str]) -> list[str]:
        """``names`` without this tensor's: the outputs the stage itself makes."""
        return [n for n in names if n != self.name]

    def around(
        self,
        requests: list[Any],
        execute: Callable[[list[Any], PartTimes], list[Any]],
        input_name: str,
    ) -> list[Any]:
        """``execute(requests, times)``, timed when asked (else ``times`` is `PartTimes.off`);
        ``input_name`` counts each request's rows."""
        if not self.declared or not any(self.name in r.requested_output_names() for r in requests):
            return execute(requests, PartTimes.off())
        times = PartTimes(self.device, self.role)
        responses = execute(requests, times)
        settled(self.device)
        times.mark_work()  # what execute did after its last mark is its work too
        ns = times.ns()
        return [
            with_times(response, {self.name: ns}, len(input_tensor(request, input_name)))
            for request, response in zip(requests, responses, strict=True)
        ]


def with_times(response: Any, extra: dict[str, Any], rows: int) -> Any:
    """``response`` with each of ``extra``'s per-batch int64 vectors (None: not asked for)
    repeated for its ``rows``; an error response is left as it is."""
    if response.has_error():
        return response
    tensors = list(response.output_tensors())
    for name, values in extra.items():
        if values is not None:
            tensors.append(output_tensor(name, np.tile(values, (rows, 1))))
    return pb_utils.InferenceResponse(output_tensors=tensors)
