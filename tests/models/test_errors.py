"""The one table of error kinds: what a stage answers each failure with, what a client reads back
from each gRPC status — by code, whatever the wording."""

from __future__ import annotations

import importlib
import sys
import types

import grpc
import pytest
import torch

from cvserve.models.errors import ErrorKind, kind_of_exception, kind_of_status
from cvserve.preprocess.spec import PreprocessError


def test_each_kind_answers_with_its_own_python_backend_code() -> None:
    codes = {kind: kind.triton_code for kind in ErrorKind}
    assert codes == {
        ErrorKind.BAD_INPUT: "INVALID_ARG",
        ErrorKind.UNAVAILABLE: "UNAVAILABLE",
        ErrorKind.INTERNAL: "INTERNAL",
    }


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, ErrorKind.BAD_INPUT),
        (grpc.StatusCode.UNAVAILABLE, ErrorKind.UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ErrorKind.UNAVAILABLE),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ErrorKind.UNAVAILABLE),
        (grpc.StatusCode.CANCELLED, ErrorKind.UNAVAILABLE),
        (grpc.StatusCode.ABORTED, ErrorKind.UNAVAILABLE),
        (grpc.StatusCode.NOT_FOUND, ErrorKind.UNAVAILABLE),  # a model not loaded (yet)
        (grpc.StatusCode.INTERNAL, ErrorKind.INTERNAL),
        (grpc.StatusCode.UNKNOWN, ErrorKind.INTERNAL),
        (grpc.StatusCode.UNIMPLEMENTED, ErrorKind.INTERNAL),
        (grpc.StatusCode.FAILED_PRECONDITION, ErrorKind.INTERNAL),
    ],
)
def test_a_grpc_status_means_one_kind_in_every_spelling(
    status: grpc.StatusCode, kind: ErrorKind
) -> None:
    # The enum, tritonclient's ``status()`` string, and the bare name.
    for spelling in (status, str(status), status.name):
        assert kind_of_status(spelling) is kind, spelling


@pytest.mark.parametrize("status", [None, "400", "503", "", "StatusCode.SOMETHING_NEW"])
def test_no_grpc_status_is_internal_never_poison_nor_endless_retry(status: object) -> None:
    # None: tritonclient's own error before sending. HTTP's 400 is ambiguous (CANCELLED, UNKNOWN
    # and ALREADY_EXISTS are 400 too): only gRPC statuses are read.
    assert kind_of_status(status) is ErrorKind.INTERNAL


@pytest.mark.parametrize(
    "error",
    [
        PreprocessError("truncated JPEG: 1,024 of 48,113 bytes"),
        PreprocessError("the moon is not a supported colour space", index=3),
        PreprocessError(""),  # no reason at all: still the input's fault
    ],
)
def test_every_preprocess_error_is_a_bad_input_whatever_its_reason(error: Exception) -> None:
    assert kind_of_exception(error) is ErrorKind.BAD_INPUT


def test_running_out_of_memory_is_unavailable_and_other_failures_internal() -> None:
    assert kind_of_exception(MemoryError()) is ErrorKind.UNAVAILABLE
    assert kind_of_exception(torch.cuda.OutOfMemoryError("CUDA out of memory")) is (
        ErrorKind.UNAVAILABLE
    )
    # Wording is not read: an error that merely talks about bad input or memory is internal.
    assert kind_of_exception(ValueError("PreprocessError: not an image")) is ErrorKind.INTERNAL
    assert kind_of_exception(RuntimeError("out of memory")) is ErrorKind.INTERNAL
    assert kind_of_exception(KeyError("LOGITS")) is ErrorKind.INTERNAL


class FakeTritonError:
    """``pb_utils.TritonError`` as the 2.51 stub has it: a message and a code."""

    INVALID_ARG, UNAVAILABLE, INTERNAL = "invalid-arg", "unavailable", "internal"

    def __init__(self, message: str, code: str = "no code") -> None:
        self.message, self.code = message, code


class FakeResponse:
    def __init__(self, output_tensors: list[object], error: FakeTritonError | None = None) -> None:
        self.error = error


def test_an_adapter_answers_each_failure_with_its_kinds_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stub = types.ModuleType("triton_python_backend_utils")
    stub.TritonError = FakeTritonError  # type: ignore[attr-defined]
    stub.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stub)
    monkeypatch.delitem(sys.modules, "cvserve.models.triton.base", raising=False)
    base = importlib.import_module("cvserve.models.triton.base")

    answered = {
        failure: base.exception_response(failure).error
        for failure in (
            PreprocessError("an unheard-of reason", index=0),
            torch.cuda.OutOfMemoryError("CUDA out of memory"),
            KeyError("LOGITS"),
        )
    }
    assert [(e.message, e.code) for e in answered.values()] == [
        ("PreprocessError: image 0: an unheard-of reason", "invalid-arg"),
        ("OutOfMemoryError: CUDA out of memory", "unavailable"),
        ("KeyError: 'LOGITS'", "internal"),
    ]
