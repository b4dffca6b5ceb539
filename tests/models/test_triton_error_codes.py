"""A refused image travels as a code: the stage answers INVALID_ARG, the real Triton's ensemble
hands it to the gRPC client as INVALID_ARGUMENT (HTTP: 400), and a worker dead-letters it on that
code; a model the server does not have is NOT_FOUND, which a worker retries."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from cvserve.broker.ensemble import EnsembleCaller, InputRejected, TritonUnavailable, classify_error
from cvserve.deploy.triton import TritonServer
from cvserve.models.client import InferenceError, PipelineClient
from cvserve.models.errors import ErrorKind
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.preprocess.tensors import LABELS, pad_images

pytestmark = pytest.mark.server

BAD_IMAGES = {
    "text": b"just some text, not an image at all\n" * 10,
    "truncated JPEG": synthetic_image(640, 480)[:20_000],
}


def grpc_error(triton: TritonServer, model: str, image: bytes) -> InferenceServerException:
    """What a plain gRPC client gets for ``image`` sent to ``model`` (its input ``IMAGE``)."""
    batch = pad_images([image])
    tensor = grpcclient.InferInput("IMAGE", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch)
    with pytest.raises(InferenceServerException) as raised:
        triton.grpc_client().infer(model, [tensor])
    return raised.value


# The ensemble, its preprocessing stage alone, and the fused stage.
MODELS = ["classify", "classify_preprocess", "fused_classify"]


@pytest.mark.parametrize("case", list(BAD_IMAGES))
@pytest.mark.parametrize("model", MODELS)
def test_a_bad_image_is_invalid_argument_and_poison(triton, model: str, case: str) -> None:
    exc = grpc_error(triton, model, BAD_IMAGES[case])
    assert exc.status() == "StatusCode.INVALID_ARGUMENT", exc.message()
    assert "PreprocessError: image 0: " in exc.message()  # the reason still reaches people
    verdict = classify_error(exc)
    assert isinstance(verdict, InputRejected) and verdict.poison


def test_the_http_client_sees_400_for_a_bad_image(triton) -> None:
    batch = pad_images([BAD_IMAGES["text"]])
    tensor = httpclient.InferInput("IMAGE", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch)
    client = httpclient.InferenceServerClient(triton.http_url)
    triton.register_client(client)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("classify", [tensor])
    assert raised.value.status() == "400"


def test_a_workers_caller_dead_letters_a_bad_image_and_answers_the_next(
    triton, sample_images
) -> None:
    caller = EnsembleCaller(triton.grpc_url, "classify", timeout_s=60.0)
    try:
        with pytest.raises(InputRejected, match="not a recognised image") as rejected:
            caller.infer(BAD_IMAGES["text"], request_id="bad-1")
        assert rejected.value.poison
        assert caller.infer(sample_images["300x200.jpeg"])[LABELS].shape == (5,)
    finally:
        caller.close()


def test_a_model_the_server_lacks_is_not_found_and_retried(triton) -> None:
    exc = grpc_error(triton, "no_such_pipeline", synthetic_image(64, 64))
    assert exc.status() == "StatusCode.NOT_FOUND"
    assert isinstance(classify_error(exc), TritonUnavailable)


def test_the_pipeline_client_names_the_kind_it_read(triton, classify_spec: PipelineSpec) -> None:
    with PipelineClient(triton.grpc_url, classify_spec) as client:
        with pytest.raises(InferenceError, match="truncated JPEG") as raised:
            client.infer([BAD_IMAGES["truncated JPEG"]])
        assert raised.value.kind is ErrorKind.BAD_INPUT
        assert client.infer([synthetic_image(64, 64)])[LABELS].dtype == np.int64
