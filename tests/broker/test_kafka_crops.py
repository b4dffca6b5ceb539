"""The crop step of a detect stage, on a synthetic image with known boxes."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from cvserve.broker.crop_parity import CROP_PARITY_BOUND, CROP_PARITY_CASES, mean_abs_diffs
from cvserve.broker.crops import (
    BOXES,
    COUNT,
    CROP_BACKEND_ENV,
    CROP_BACKENDS,
    CROP_COUNT,
    SCORES,
    crop_emitter,
    cut_crops,
    resolve_crop_backend,
    select_boxes,
)
from cvserve.broker.producer import image_message
from cvserve.broker.schema import Message, decode_outputs
from cvserve.deploy.host import cuda_available
from cvserve.deploy.kafka_limits import LIMITS
from cvserve.preprocess.spec import PreprocessError
from cvserve.preprocess.synthetic import colour_case, encode

# Every crop backend; nvjpeg (decode, crop, encode on the GPU) only where CUDA is usable.
BACKENDS = [
    pytest.param(
        name,
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU"),
        ],
    )
    if device == "cuda"
    else name
    for name, device in CROP_BACKENDS.items()
]

# A grey 200x120 image with a red and a blue rectangle at known places.
RED_BOX = (20, 30, 80, 90)
BLUE_BOX = (120, 10, 190, 50)


def scene() -> bytes:
    rgb = np.full((120, 200, 3), 128, np.uint8)
    rgb[RED_BOX[1] : RED_BOX[3], RED_BOX[0] : RED_BOX[2]] = (255, 0, 0)
    rgb[BLUE_BOX[1] : BLUE_BOX[3], BLUE_BOX[0] : BLUE_BOX[2]] = (0, 0, 255)
    return encode(rgb, "png")  # lossless: crops compare to exact colours


def detections() -> dict[str, np.ndarray]:
    return {
        BOXES: np.array([BLUE_BOX, RED_BOX, (0, 0, 5, 5), (0, 0, 0, 0)], np.float32),
        SCORES: np.array([0.6, 0.9, 0.2, 0.0], np.float32),
        COUNT: np.array([3], np.int64),
    }


def test_select_boxes_thresholds_orders_caps_and_clips() -> None:
    boxes = np.array([[-5.5, 2.2, 50.1, 40.0], [10, 10, 20, 20], [300, 0, 400, 10]], np.float32)
    scores = np.array([0.8, 0.95, 0.9], np.float32)
    assert select_boxes(boxes, scores, 100, 50, 0.5, 10) == [(10, 10, 20, 20), (0, 2, 51, 40)]
    assert select_boxes(boxes, scores, 100, 50, 0.85, 10) == [(10, 10, 20, 20)]
    assert select_boxes(boxes, scores, 100, 50, 0.5, 1) == [(10, 10, 20, 20)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_cut_crops_cuts_the_right_pixels_best_first(backend: str) -> None:
    out = detections()
    crops = cut_crops(scene(), out[BOXES], out[SCORES], score_threshold=0.5, backend=backend)
    assert [c.crop.index for c in crops] == [0, 1]
    assert [c.crop.box for c in crops] == [RED_BOX, BLUE_BOX]
    for cut, colour in zip(crops, ((255, 0, 0), (0, 0, 255)), strict=True):
        x1, y1, x2, y2 = cut.crop.box
        bgr = cv2.imdecode(np.frombuffer(cut.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert cut.jpeg[:3] == b"\xff\xd8\xff"
        assert bgr.shape == (y2 - y1, x2 - x1, 3)
        mean_rgb = bgr[..., ::-1].reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(mean_rgb, colour, atol=6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_undecodable_image_is_a_preprocess_error(backend: str) -> None:
    out = detections()
    with pytest.raises(PreprocessError, match="cannot decode|not a recognised image|truncated"):
        cut_crops(b"\xff\xd8\xff broken", out[BOXES], out[SCORES], backend=backend)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "opencv"])
@pytest.mark.parametrize("case", CROP_PARITY_CASES)
def test_every_backend_cuts_what_opencv_cuts(backend: str, case: str) -> None:
    """Same boxes from the upright image (EXIF applied), same pixels within JPEG noise."""
    diffs = mean_abs_diffs(case, backend)
    assert len(diffs) == 3 and max(diffs) < CROP_PARITY_BOUND, diffs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["exif6_jpeg", "exif8_png", "exif3_webp"])
def test_crops_of_an_exif_rotated_image_are_cut_from_the_upright_image(
    backend: str, case: str
) -> None:
    image = colour_case(case, 96, 64, seed=3)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(image))).convert("RGB"))
    x1, y1, x2, y2 = box = (5, 7, 40, 50)
    boxes, scores = np.array([box], np.float32), np.array([0.9], np.float32)
    (cut,) = cut_crops(image, boxes, scores, 0.5, 16, backend=backend)
    rgb = cv2.imdecode(np.frombuffer(cut.jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    want = upright[y1:y2, x1:x2]
    assert rgb.shape == want.shape
    # JPEG re-encoding of this detailed image: ~5-9 levels; the stored (unrotated) pixels: 70+.
    assert np.abs(rgb.astype(int) - want.astype(int)).mean() < 20.0


def test_auto_picks_nvjpeg_only_with_cuda_and_the_environment_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CROP_BACKEND_ENV, raising=False)
    assert resolve_crop_backend() == ("nvjpeg" if cuda_available() else "opencv")
    monkeypatch.setenv(CROP_BACKEND_ENV, "torchvision")
    assert resolve_crop_backend() == "torchvision"
    assert resolve_crop_backend("opencv") == "opencv"
    with pytest.raises(ValueError, match="crop backend 'gpu'"):
        resolve_crop_backend("gpu")


def test_crop_emitter_fans_out_one_message_per_crop_tied_to_the_request() -> None:
    source = image_message(scene(), "detect_identify", "detect", key="camera-1")
    emitted = crop_emitter("identify", score_threshold=0.5, max_crops=16)(
        source, detections(), "detect"
    )
    detection, *crops = emitted
    assert detection.is_result and detection.crop is None and detection.stage == "detect"
    assert decode_outputs(detection.value)[CROP_COUNT].tolist() == [2]
    assert [(c.crop.index, c.crop.box) for c in crops] == [(0, RED_BOX), (1, BLUE_BOX)]
    for crop in crops:
        assert crop.stage == "identify" and crop.content_type == "image/jpeg"
        assert crop.request_id == source.request_id and crop.record_key == "camera-1"
        assert crop.original_size == (200, 120)
        assert crop.trace.trace_id == source.trace.trace_id
    assert len({m.identity for m in emitted}) == 3


def test_fan_out_copies_a_bounded_key_and_trace_into_each_crop() -> None:
    """Finding 7: every crop used to carry the request's whole key and hops (2.1 MB in →
    350 MB written for 87 crops); the key is bounded at parse and the hops on the way out."""
    rng = np.random.default_rng(3)
    corners = np.stack([rng.integers(0, 150, 87), rng.integers(0, 70, 87)], axis=1)
    boxes = np.concatenate([corners, corners + 40], axis=1).astype(np.float32)
    outputs = {BOXES: boxes, SCORES: np.ones(87, np.float32), COUNT: np.array([87], np.int64)}
    source = image_message(scene(), "detect_identify", "detect", key="k" * LIMITS.max_key_bytes)
    for n in range(5_000):
        source = source.with_hop(f"elsewhere.{n}")
    emitted = crop_emitter("identify", score_threshold=0.5, max_crops=100)(
        source, outputs, "detect"
    )
    records = [m.to_record() for m in emitted]
    assert len(records) == 88
    for message, record in zip(emitted, records, strict=True):
        overhead = record.size - len(record.value)
        assert overhead < LIMITS.max_key_bytes + LIMITS.max_hops_bytes + 1024, overhead
        again = Message.from_record(record)
        assert len(again.trace.hops) <= LIMITS.max_hops
        assert again.trace.dropped == len(message.trace.hops) - len(again.trace.hops)
        assert again.trace.hops[-1] == message.trace.hops[-1]  # the newest are kept
