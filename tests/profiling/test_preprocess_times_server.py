"""PREPROCESS_TIMES from the real preprocessing model (DALI timed step by step) on a real
tritonserver, and `cvserve profile --split-preprocess` showing the three steps from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from cvserve.deploy.triton import TritonServer
from cvserve.models.client import InferenceError, PipelineClient
from cvserve.models.repository.local import write_repository
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import PREPROCESS_TIMES, with_preprocess_times
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.preprocessor import STEPS
from cvserve.preprocess.spec import PreprocessParams
from cvserve.preprocess.tensors import IMAGE, PIXELS, pad_images
from cvserve.profiling import tritonstats
from cvserve.profiling.tritontrace import server_args

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def timed_spec(classify_spec: PipelineSpec) -> PipelineSpec:
    return with_preprocess_times(classify_spec)


@pytest.fixture(scope="module")
def server(timed_spec: PipelineSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("timed-triton")
    repository = write_repository(timed_spec, workdir / "repository")
    triton = TritonServer(
        repository, workdir=workdir / "server", extra_args=server_args(workdir / "trace.json")
    )
    triton.start(timeout_s=180)
    yield triton.grpc_url
    triton.stop()


@pytest.fixture
def client(server: str, timed_spec: PipelineSpec) -> Iterator[PipelineClient]:
    with PipelineClient(server, timed_spec) as c:
        yield c


def test_each_image_gets_three_positive_times_within_the_models_compute(
    client: PipelineClient, sample_images: dict[str, bytes]
) -> None:
    names = [["640x480.jpeg", "1920x1080.jpeg"], ["300x200.jpeg"], ["1024x512.png", "257x311.png"]]
    requests = [[sample_images[n] for n in request] for request in names]
    model = "classify_preprocess"
    before = tritonstats.fetch_settled(client.triton, [model])[model]
    reported = 0
    for images in requests:  # one at a time: each request is one execution
        times = client.infer(images)[PREPROCESS_TIMES.name]
        assert times.dtype == np.int64 and times.shape == (len(images), len(STEPS))
        assert (times > 0).all(), times
        assert (times == times[0]).all(), "one Triton batch, one set of times"
        reported += int(times[0].sum())
    delta = tritonstats.fetch_settled(client.triton, [model])[model] - before
    assert delta.requests == len(requests)
    assert 0 < reported <= delta.ns["compute_infer"], (reported, delta.ns)


def test_timed_model_pixels_equal_the_fused_pipeline(
    server: str, timed_spec: PipelineSpec, sample_images: dict[str, bytes]
) -> None:
    images = list(sample_images.values())
    batch = pad_images(images)
    tensor = grpcclient.InferInput(IMAGE, list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch)
    triton = grpcclient.InferenceServerClient(server)
    try:
        names = [PIXELS, PREPROCESS_TIMES.name]
        outputs = [grpcclient.InferRequestedOutput(n) for n in names]
        result = triton.infer("classify_preprocess", [tensor], outputs=outputs)
    finally:
        triton.close()
    params = timed_spec.stage_by_role("preprocess").params_as(PreprocessParams)
    fused = DaliPreprocessor(params.spec, 8, 1).run_batch(images)
    np.testing.assert_array_equal(result.as_numpy(PIXELS), fused)
    assert result.as_numpy(PREPROCESS_TIMES.name).shape == (len(images), len(STEPS))


def test_a_bad_image_gets_its_error_and_the_next_request_its_times(
    client: PipelineClient, sample_images: dict[str, bytes]
) -> None:
    good = sample_images["300x200.jpeg"]
    no_scan = good[: good.index(b"\xff\xda")] + b"\xff\xd9"
    with pytest.raises(InferenceError, match="corrupt JPEG"):
        client.infer([good, no_scan])
    assert (client.infer([good])[PREPROCESS_TIMES.name] > 0).all()


def test_profile_split_preprocess_shows_the_three_steps(server: str, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    argv = ["profile", "--pipeline", "classify", "--triton-url", server, "--sizes", "320x240"]
    argv += ["--concurrency", "1", "--preprocess", "server-cpu", "--duration", "0.6"]
    argv += ["--images-per-size", "1", "--split-preprocess", "--out", str(out)]
    assert main(argv) == 0
    (run,) = out.iterdir()
    rows = json.loads((run / "requests.json").read_text())
    assert rows
    for row in rows:
        steps = [row["spans_ms"].get(f"classify_preprocess.{step}", 0.0) for step in STEPS]
        assert all(ms > 0 for ms in steps), row["spans_ms"]
    events = json.loads((run / "trace.json").read_text())["traceEvents"]
    spans = {e["name"] for e in events if e["ph"] == "X"}
    assert {f"classify_preprocess.{step}" for step in STEPS} <= spans
