"""The classify ensemble on a real tritonserver against the same pipeline run in-process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from cvserve.deploy.triton import TritonServer
from cvserve.models.client import InferenceError, PipelineClient
from cvserve.models.params import DnnParams, PostprocessParams
from cvserve.models.postprocess_functions import top_k
from cvserve.models.zoo import build_dnn
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.spec import PreprocessParams
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.preprocess.tensors import LABELS, PIXELS, SCORES, pad_images
from cvserve.profiling import tritonstats

pytestmark = pytest.mark.server


class InProcess:
    """The classify pipeline without Triton: DALI CPU + the same seeded model + top-k."""

    def __init__(self, spec: PipelineSpec) -> None:
        pre = spec.stage_by_role("preprocess").params_as(PreprocessParams)
        self.preprocess = DaliPreprocessor(pre.spec, 8, 1)
        self.model = build_dnn(spec.stage_by_role("inference").params_as(DnnParams))
        self.k = spec.stage_by_role("postprocess").params_as(PostprocessParams).options()["k"]

    def probabilities(self, images: list[bytes]) -> np.ndarray:
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(self.preprocess.run_batch(images)))
        labels, probs = (t.numpy() for t in top_k(logits, logits.shape[1]))
        full = np.empty_like(probs)
        np.put_along_axis(full, labels, probs, axis=1)
        return full


@pytest.fixture(scope="module")
def reference(classify_spec: PipelineSpec) -> InProcess:
    return InProcess(classify_spec)


@pytest.fixture
def client(triton: TritonServer, classify_spec: PipelineSpec):
    with PipelineClient(triton.grpc_url, classify_spec) as c:
        yield c


def assert_same_answer(out: dict[str, np.ndarray], probabilities: np.ndarray, k: int) -> None:
    """Scores are the reference's top-k probabilities, and each label has its score."""
    expected_top = -np.sort(-probabilities, axis=1)[:, :k]
    np.testing.assert_allclose(out[SCORES], expected_top, atol=2e-5, rtol=1e-4)
    got = np.take_along_axis(probabilities, out[LABELS], axis=1)
    np.testing.assert_allclose(out[SCORES], got, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["640x480.jpeg", "300x200.jpeg", "1024x512.png", "257x311.png"])
def test_single_image_matches_in_process_pipeline(client, reference, sample_images, name) -> None:
    out = client.infer([sample_images[name]])
    assert out[LABELS].shape == (1, reference.k) and out[LABELS].dtype == np.int64
    assert out[SCORES].dtype == np.float32
    assert_same_answer(out, reference.probabilities([sample_images[name]]), reference.k)


def test_batched_request_of_mixed_sizes_and_formats_matches(
    client, reference, sample_images
) -> None:
    images = list(sample_images.values())
    out = client.infer(images)
    assert out[LABELS].shape == (len(images), reference.k)
    assert_same_answer(out, reference.probabilities(images), reference.k)


def test_preprocess_model_output_equals_local_dali(triton, reference, sample_images) -> None:
    image = sample_images["640x480.jpeg"]
    batch = pad_images([image])
    tensor = grpcclient.InferInput("IMAGE", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch)
    pixels = triton.grpc_client().infer("classify_preprocess", [tensor]).as_numpy(PIXELS)
    np.testing.assert_allclose(pixels[0], reference.preprocess.run_batch([image])[0], atol=1e-6)


def test_concurrent_requests_are_batched(triton, classify_spec, sample_images) -> None:
    stats = triton.grpc_client()
    before = tritonstats.fetch(stats, "classify_dnn")
    image = sample_images["300x200.jpeg"]

    def send(_: int) -> np.ndarray:
        with PipelineClient(triton.grpc_url, classify_spec) as c:
            return c.infer([image])[LABELS]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(32)))
    assert all((a == answers[0]).all() for a in answers)
    delta = tritonstats.fetch(stats, "classify_dnn") - before
    assert delta.requests == 32
    assert max(delta.batches) > 1, f"no execution batched more than one request: {delta.batches}"
    assert delta.executions < 32


BAD_INPUTS = {
    "zero bytes": (b"", "empty input"),
    "random bytes": (
        bytes(np.random.default_rng(1).integers(1, 255, 5000, dtype=np.uint8)),
        "not a recognised image",
    ),
    "truncated JPEG": (synthetic_image(640, 480)[:20_000], "truncated JPEG"),
    "text file": (b"just some text, not an image at all\n" * 10, "not a recognised image"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_clear_error_and_server_keeps_serving(
    client, reference, sample_images, case: str
) -> None:
    data, reason = BAD_INPUTS[case]
    with pytest.raises(InferenceError, match=f"PreprocessError: image 0: {reason}"):
        client.infer([data])
    good = sample_images["300x200.jpeg"]
    assert_same_answer(client.infer([good]), reference.probabilities([good]), reference.k)


def test_a_motion_photo_jpeg_is_answered_as_its_jpeg(client, sample_images) -> None:
    """A phone's motion photo: the JPEG, then an MP4 (ftyp + mdat) appended after its EOI."""
    jpeg = sample_images["640x480.jpeg"]
    media = bytes(np.random.default_rng(5).integers(0, 256, 8000, dtype=np.uint8))
    video = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42" + b"\x00\x00\x1f\x48mdat" + media
    plain, motion = client.infer([jpeg]), client.infer([jpeg + video])
    np.testing.assert_array_equal(motion[LABELS], plain[LABELS])
    np.testing.assert_array_equal(motion[SCORES], plain[SCORES])


def test_tensors_round_trip_exactly_through_the_python_backend(triton) -> None:
    """Fails if NumPy 2 reaches the stub (it misreads dtype sizes there, silently)."""
    rng = np.random.default_rng(7)
    sent = {
        "U8": rng.integers(0, 256, 1001, dtype=np.uint8),
        "F32": rng.normal(size=777).astype(np.float32),
        "F16": rng.normal(size=513).astype(np.float16),
        "I64": rng.integers(-(2**62), 2**62, 255, dtype=np.int64),
        "BYTES": np.array([b"cvserve", b"", b"\x00\xff" * 40], dtype=object),
    }
    dtypes = {"U8": "UINT8", "F32": "FP32", "F16": "FP16", "I64": "INT64", "BYTES": "BYTES"}
    inputs = []
    for name, array in sent.items():
        tensor = grpcclient.InferInput(f"IN_{name}", list(array.shape), dtypes[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = triton.grpc_client().infer("echo", inputs)
    for name, array in sent.items():
        back = result.as_numpy(f"OUT_{name}")
        assert back.dtype == array.dtype and back.shape == array.shape, name
        assert np.array_equal(back, array), f"{name} corrupted through the stub"
    version = result.as_numpy("NUMPY_VERSION")[0].decode()
    assert int(version.split(".")[0]) < 2, f"the Triton stub runs NumPy {version}"


def test_cli_infer_prints_top_k_per_image(triton, sample_images, tmp_path, capsys) -> None:
    good = tmp_path / "good.jpg"
    good.write_bytes(sample_images["640x480.jpeg"])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    code = main(
        [
            "infer",
            "--pipeline",
            "classify",
            "--arch",
            "mobilenet_v3_small",
            "--url",
            triton.grpc_url,
            str(good),
            str(bad),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 1  # one image failed
    assert lines[0].startswith(f"{good}: ") and lines[0].count("(") == 5
    assert lines[1].startswith(f"{bad}: ERROR") and "not a recognised image" in lines[1]
