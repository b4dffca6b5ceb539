"""Client of a served pipeline over Triton gRPC: encoded images in, the pipeline's outputs back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cvserve.deploy.triton_grpc import grpc_client, unreachable
from cvserve.models.errors import ErrorKind, kind_of_status
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.tensors import pad_images


class InferenceError(RuntimeError):
    """The server answered a request with an error (its message is kept) of ``kind``, read from
    the gRPC status (`models.errors`): BAD_INPUT (an image the pipeline refuses), UNAVAILABLE
    (overloaded, a model not loaded yet: try later) or INTERNAL."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.INTERNAL) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class PipelineClient:
    """Sends images to the Triton ensemble of ``spec`` at ``url`` (host:grpc_port)."""

    url: str
    spec: PipelineSpec
    timeout_s: float | None = 120.0

    def __post_init__(self) -> None:
        self._client = grpc_client(self.url)

    def infer(
        self, images: Sequence[bytes], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """One request holding all ``images``; returns each requested output, batch first."""
        (image_input,) = self.spec.inputs
        batch = pad_images(images)
        tensor = grpcclient.InferInput(
            image_input.name, list(batch.shape), image_input.triton_dtype
        )
        tensor.set_data_from_numpy(batch)
        names = list(outputs or (t.name for t in self.spec.outputs))
        try:
            result = self._client.infer(
                self.spec.name,
                [tensor],
                outputs=[grpcclient.InferRequestedOutput(n) for n in names],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            # UNAVAILABLE is also what gRPC reports when nothing answered at all.
            if exc.status() == "StatusCode.UNAVAILABLE" and not self._live():
                raise unreachable(self.url, message) from exc
            raise InferenceError(message, kind_of_status(exc.status())) from exc
        return {name: result.as_numpy(name) for name in names}

    def _live(self) -> bool:
        """Whether the server answers a liveness check within 2 s. A refused connection and a
        stage that answered UNAVAILABLE (overloaded) share one gRPC status; this tells them
        apart without reading the message."""
        try:
            return bool(self._client.is_server_live(client_timeout=2.0))
        except InferenceServerException:
            return False

    @property
    def triton(self) -> grpcclient.InferenceServerClient:
        return self._client

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PipelineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
