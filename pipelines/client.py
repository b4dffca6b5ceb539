"""Client of a served pipeline over Triton gRPC: encoded images in, the pipeline's outputs back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cvserve.pipelines.spec import PipelineSpec


class InferenceError(RuntimeError):
    """The server answered a request with an error (its message is kept)."""


def pad_images(images: Sequence[bytes]) -> np.ndarray:
    """(N, L) uint8: each image's bytes, zero-padded to the longest (decoders ignore the tail)."""
    if not images:
        raise ValueError("no images")
    length = max(1, *(len(image) for image in images))
    batch = np.zeros((len(images), length), dtype=np.uint8)
    for row, image in enumerate(images):
        batch[row, : len(image)] = np.frombuffer(image, dtype=np.uint8)
    return batch


def read_images(paths: Sequence[str | Path]) -> list[bytes]:
    return [Path(p).read_bytes() for p in paths]


@dataclass
class PipelineClient:
    """Sends images to the Triton ensemble of ``spec`` at ``url`` (host:grpc_port)."""

    url: str
    spec: PipelineSpec
    timeout_s: float | None = 120.0

    def __post_init__(self) -> None:
        self._client = grpcclient.InferenceServerClient(self.url)

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
            raise InferenceError(exc.message() or str(exc)) from exc
        return {name: result.as_numpy(name) for name in names}

    def statistics(self, model: str) -> dict[str, Any]:
        return self._client.get_inference_statistics(model, as_json=True)

    @property
    def triton(self) -> grpcclient.InferenceServerClient:
        return self._client

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PipelineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
