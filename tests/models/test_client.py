"""`PipelineClient`'s errors: the kind read from the gRPC status, and "nothing answered" told
from "the server answered UNAVAILABLE" without reading a message (no Triton: a gRPC client that
answers what each test says; one test calls a port where nothing listens)."""

from __future__ import annotations

from typing import Any

import pytest
from tritonclient.utils import InferenceServerException

import cvserve.models.client as client_module
from cvserve.deploy.ports import free_port
from cvserve.deploy.triton_grpc import TritonUnreachable
from cvserve.models.client import InferenceError, PipelineClient
from cvserve.models.errors import ErrorKind
from cvserve.pipelines.spec import PipelineSpec


class AnsweringClient:
    """A live server whose every inference fails with ``error``."""

    def __init__(self, error: InferenceServerException) -> None:
        self.error = error

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error

    def is_server_live(self, **_: Any) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("StatusCode.INVALID_ARGUMENT", ErrorKind.BAD_INPUT),
        ("StatusCode.UNAVAILABLE", ErrorKind.UNAVAILABLE),  # answered: the stage is overloaded
        ("StatusCode.NOT_FOUND", ErrorKind.UNAVAILABLE),
        ("StatusCode.INTERNAL", ErrorKind.INTERNAL),
    ],
)
def test_an_answered_error_carries_the_kind_of_its_status(
    monkeypatch: pytest.MonkeyPatch, classify_spec: PipelineSpec, status: str, kind: ErrorKind
) -> None:
    error = InferenceServerException("in ensemble 'classify', words of no meaning", status)
    monkeypatch.setattr(client_module, "grpc_client", lambda url: AnsweringClient(error))
    with (
        PipelineClient("127.0.0.1:1", classify_spec) as client,
        pytest.raises(InferenceError, match="words of no meaning") as raised,
    ):
        client.infer([b"image"])
    assert raised.value.kind is kind


def test_a_port_where_nothing_listens_is_unreachable(classify_spec: PipelineSpec) -> None:
    url = f"127.0.0.1:{free_port()}"
    with (
        PipelineClient(url, classify_spec, timeout_s=5.0) as client,
        pytest.raises(TritonUnreachable, match="did not answer over gRPC"),
    ):
        client.infer([b"image"])
