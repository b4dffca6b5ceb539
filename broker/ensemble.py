"""Call one Triton ensemble for one encoded image, telling "retry later" from "bad input".

The ensemble's input and outputs are read from the server's model metadata (one encoded-image
input, every output requested), so a stage worker needs only the ensemble's name.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cvserve.deploy.triton_grpc import grpc_client
from cvserve.models.errors import ErrorKind, kind_of_status
from cvserve.preprocess.tensors import pad_images


class TritonUnavailable(RuntimeError):
    """Triton did not answer (down, unreachable, model not loaded, overloaded, timed out): retry
    later."""


class InputRejected(RuntimeError):
    """Triton answered this input with an error; ``poison`` if it is the input's fault
    (INVALID_ARGUMENT: undecodable, truncated, too many pixels …), which retrying never fixes."""

    def __init__(self, reason: str, poison: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.poison = poison


def classify_error(exc: InferenceServerException) -> TritonUnavailable | InputRejected:
    """What a failed call means, by its gRPC status code alone (`models.errors.kind_of_status`):
    INVALID_ARGUMENT → poison; UNAVAILABLE, DEADLINE_EXCEEDED, NOT_FOUND (a model not loaded
    yet), … → `TritonUnavailable`; any other status, or none (tritonclient's own error before
    sending), → a server error (``poison=False``: the caller retries it a bounded number of
    times). The message is carried, never read: gRPC gives every failure a status, the refused
    connection too (UNAVAILABLE), so no wording needs matching."""
    message = exc.message() or str(exc)
    kind = kind_of_status(exc.status())
    if kind is ErrorKind.UNAVAILABLE:
        return TritonUnavailable(f"{exc.status()}: {message}")
    return InputRejected(message, poison=kind is ErrorKind.BAD_INPUT)


@dataclass
class EnsembleCaller:
    """Sends one image per request to ensemble ``model`` at ``url`` (gRPC host:port).

    Thread-safe: a stage worker calls `infer` from several threads to keep requests in flight.
    """

    url: str
    model: str
    timeout_s: float = 60.0
    _client: Any = field(init=False, repr=False)
    _io: tuple[str, str, list[str]] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = grpc_client(self.url)

    def _signature(self) -> tuple[str, str, list[str]]:
        """(input name, input dtype, output names), read once from the model metadata."""
        with self._lock:
            if self._io is None:
                try:
                    meta = self._client.get_model_metadata(
                        self.model, as_json=True, client_timeout=self.timeout_s
                    )
                except InferenceServerException as exc:
                    raise TritonUnavailable(
                        f"metadata of {self.model}: {exc.status()}: {exc.message()}"
                    ) from exc
                (tensor,) = meta["inputs"]
                self._io = (
                    tensor["name"],
                    tensor["datatype"],
                    [o["name"] for o in meta["outputs"]],
                )
            return self._io

    def infer(self, image: bytes, request_id: str = "") -> dict[str, np.ndarray]:
        """The ensemble's outputs for ``image``, batch dimension removed. ``request_id`` goes
        with the request (Triton writes it into its trace: the profiler joins by it).

        Raises `TritonUnavailable` (retry later) or `InputRejected`.
        """
        name, dtype, outputs = self._signature()
        batch = pad_images([image])
        tensor = grpcclient.InferInput(name, list(batch.shape), dtype)
        tensor.set_data_from_numpy(batch)
        try:
            result = self._client.infer(
                self.model,
                [tensor],
                outputs=[grpcclient.InferRequestedOutput(n) for n in outputs],
                request_id=request_id,
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise classify_error(exc) from exc
        return {n: result.as_numpy(n)[0] for n in outputs}

    def ready(self) -> bool:
        """Whether the server answers ``is_server_ready`` within 2 s (a health check)."""
        try:
            return bool(self._client.is_server_ready(client_timeout=2.0))
        except Exception:  # unreachable, refused, timed out: not ready
            return False

    def close(self) -> None:
        self._client.close()
