"""What a failed Triton request means, decided by its status code on both sides of the wire.

The one table of error kinds: a stage adapter answers a failure with the python-backend code of
its kind (`triton_code`), and a client reads the kind back from the gRPC status it receives
(`kind_of_status`) — never from the message, whose wording is free to change.

Seen with Triton 2.51 (python backend, gRPC): ``pb_utils.TritonError(msg, INVALID_ARG)`` from a
composing model reaches the ensemble's client as ``StatusCode.INVALID_ARGUMENT`` (the message
prefixed ``in ensemble '<name>', ``), ``UNAVAILABLE`` as ``UNAVAILABLE``, no code as
``INTERNAL``. Over HTTP INVALID_ARG is 400, but so are CANCELLED, UNKNOWN and ALREADY_EXISTS:
only the gRPC status tells a bad input apart, so clients classify gRPC statuses.

Torch-free and tritonclient-free: the stub and every client import it.
"""

from __future__ import annotations

import sys
from enum import Enum

from cvserve.preprocess.spec import PreprocessError


class ErrorKind(Enum):
    """Why a request failed, as far as whoever sent it should act on it."""

    BAD_INPUT = "bad input"  # the request's own fault: retrying never helps (dead letter)
    UNAVAILABLE = "unavailable"  # not now (down, starting, overloaded): retry later
    INTERNAL = "internal"  # the server failed otherwise: a bounded number of retries

    @property
    def triton_code(self) -> str:
        """The ``pb_utils.TritonError`` code attribute a stage answers this kind with."""
        return _TRITON_CODES[self]


_TRITON_CODES = {
    ErrorKind.BAD_INPUT: "INVALID_ARG",
    ErrorKind.UNAVAILABLE: "UNAVAILABLE",
    ErrorKind.INTERNAL: "INTERNAL",
}

# gRPC statuses (the names of ``grpc.StatusCode``) and the kind each means to a client. Triton
# itself answers NOT_FOUND for a model it has not (yet) loaded ("has no available versions",
# a server starting or reloading), UNAVAILABLE when a model's queue is full (max_queue_size), and
# INVALID_ARGUMENT for a request its own checks refuse (a wrong dtype or shape); the gRPC library
# answers UNAVAILABLE when nothing listens and DEADLINE_EXCEEDED when the client's timeout ran
# out. Every status not named here (INTERNAL, UNKNOWN, UNIMPLEMENTED, ...) is INTERNAL.
_GRPC_KINDS = {
    "INVALID_ARGUMENT": ErrorKind.BAD_INPUT,
    "UNAVAILABLE": ErrorKind.UNAVAILABLE,
    "DEADLINE_EXCEEDED": ErrorKind.UNAVAILABLE,
    "RESOURCE_EXHAUSTED": ErrorKind.UNAVAILABLE,
    "CANCELLED": ErrorKind.UNAVAILABLE,
    "ABORTED": ErrorKind.UNAVAILABLE,
    "NOT_FOUND": ErrorKind.UNAVAILABLE,
}


def kind_of_status(status: object) -> ErrorKind:
    """The kind a gRPC ``status`` means: a ``grpc.StatusCode``, its ``str()`` (what
    ``tritonclient``'s ``InferenceServerException.status()`` returns, ``"StatusCode.NOT_FOUND"``)
    or its bare name. ``None`` — tritonclient's own errors, raised before anything was sent — and
    anything else (an HTTP status, whose 400 is ambiguous) is INTERNAL."""
    if status is None:
        return ErrorKind.INTERNAL
    name = getattr(status, "name", None) or str(status).removeprefix("StatusCode.")
    return _GRPC_KINDS.get(name, ErrorKind.INTERNAL)


def kind_of_exception(exc: BaseException) -> ErrorKind:
    """The kind a stage answers ``exc`` with: an image it refuses (`PreprocessError`) is
    BAD_INPUT; running out of host or device memory is UNAVAILABLE (the stage is overloaded by
    what it holds now; a later try finds memory free — `sniff` bounds what one image takes);
    anything else is INTERNAL."""
    if isinstance(exc, PreprocessError):
        return ErrorKind.BAD_INPUT
    if isinstance(exc, MemoryError) or _cuda_out_of_memory(exc):
        return ErrorKind.UNAVAILABLE
    return ErrorKind.INTERNAL


def _cuda_out_of_memory(exc: BaseException) -> bool:
    # torch only where it is already imported (a stage): clients never load it for this.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)
