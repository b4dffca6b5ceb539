"""Every task's ensemble on the real server: declared outputs, in-process equality, and results
in original image coordinates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cvserve.deploy.triton import TritonServer
from cvserve.models.client import PipelineClient
from cvserve.models.local_pipeline import LocalPipeline
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.synthetic import encode, synthetic_image
from cvserve.preprocess.tensors import BOXES, COUNT, DEPTH, EMBEDDING, LABELS, MASK, SCORES, SIZE

pytestmark = pytest.mark.server

SIZES = [(300, 200), (160, 240)]  # (width, height): landscape and portrait


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [synthetic_image(w, h, seed=w) for w, h in SIZES]


@pytest.fixture(scope="module")
def local(task_specs: dict[str, PipelineSpec]) -> dict[str, LocalPipeline]:
    return {name: LocalPipeline(spec) for name, spec in task_specs.items()}


def served(triton: TritonServer, spec: PipelineSpec, images: list[bytes]) -> dict[str, np.ndarray]:
    with PipelineClient(triton.grpc_url, spec) as client:
        return client.infer(images)


def test_every_generated_model_is_ready(triton: TritonServer, task_specs, classify_spec) -> None:
    client = triton.grpc_client()
    for spec in (classify_spec, *task_specs.values()):
        for model in spec.model_names:
            assert client.is_model_ready(model), model


@pytest.mark.parametrize("task", ["segment", "detect", "detect_bright", "depth", "identify"])
def test_outputs_are_as_declared(triton, task_specs, images, task: str) -> None:
    spec = task_specs[task]
    out = served(triton, spec, images)
    assert sorted(out) == sorted(t.name for t in spec.outputs)
    for tensor in spec.outputs:
        got = out[tensor.name]
        assert got.dtype == tensor.numpy_dtype, tensor.name
        assert got.shape[0] == len(images)
        assert len(got.shape) == 1 + len(tensor.dims), tensor.name
        for size, declared in zip(got.shape[1:], tensor.dims, strict=True):
            assert declared in (-1, size), (tensor.name, got.shape, tensor.dims)


def test_segmentation_matches_in_process_at_original_size(
    triton, task_specs, local, images
) -> None:
    out = served(triton, task_specs["segment"], images)
    expected = local["segment"](images)
    for row, (w, h) in enumerate(SIZES):
        assert out[SIZE][row].tolist() == [h, w]
        mask = out[MASK][row][:h, :w]
        assert (mask == expected[MASK][row][:h, :w]).mean() > 0.999
        assert mask.max() < 21


def test_depth_matches_in_process_at_original_size(triton, task_specs, local, images) -> None:
    out = served(triton, task_specs["depth"], images)
    expected = local["depth"](images)
    assert out[DEPTH].dtype == np.float16
    for row, (w, h) in enumerate(SIZES):
        assert out[SIZE][row].tolist() == [h, w]
        np.testing.assert_allclose(
            out[DEPTH][row][:h, :w].astype(np.float32),
            expected[DEPTH][row][:h, :w].astype(np.float32),
            rtol=2e-3,
            atol=2e-3,
        )


def test_embeddings_match_in_process_and_are_unit_length(triton, task_specs, local, images) -> None:
    out = served(triton, task_specs["identify"], images)
    np.testing.assert_allclose(out[EMBEDDING], local["identify"](images)[EMBEDDING], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(out[EMBEDDING], axis=1), 1.0, atol=1e-5)


def test_real_detector_matches_in_process(triton, task_specs, local, images) -> None:
    out = served(triton, task_specs["detect"], images)
    expected = local["detect"](images)
    np.testing.assert_array_equal(out[COUNT], expected[COUNT])
    for row in range(len(images)):
        n = int(out[COUNT][row, 0])
        np.testing.assert_allclose(out[SCORES][row, :n], expected[SCORES][row, :n], atol=1e-4)
        np.testing.assert_allclose(out[BOXES][row, :n], expected[BOXES][row, :n], atol=0.05)


@pytest.mark.parametrize(
    ("width", "height", "box"),
    [
        (640, 480, (100, 50, 300, 250)),  # landscape: letterbox pads top and bottom
        (400, 800, (40, 500, 360, 780)),  # portrait: pads left and right
        (1000, 1000, (0, 0, 250, 600)),  # square, touching the corner
    ],
)
def test_detected_box_lands_in_original_coordinates(triton, task_specs, width, height, box) -> None:
    """The fixed-head detector boxes the white rectangle in model-input pixels; the served answer
    must be that rectangle in the original image, up to one model-input pixel of resizing."""
    rgb = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    cv2.rectangle(rgb, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 255), thickness=-1)
    out = served(triton, task_specs["detect_bright"], [encode(rgb, "png")])
    assert out[COUNT][0, 0] == 1 and out[LABELS][0, 0] == 1
    scale = 320 / max(width, height)
    np.testing.assert_allclose(out[BOXES][0, 0], box, atol=1.5 / scale)
