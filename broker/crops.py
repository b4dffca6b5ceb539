"""Cut detections out of the original image (the fan-out of a detect stage).

`cut_crops` is a plain function on encoded bytes and detector outputs: boxes above a score
threshold, best first, at most K, clipped to the image, each JPEG-encoded. Backends: ``opencv``
(CPU), ``nvjpeg`` (decode, crop and encode on the GPU, `broker.crop_torch`) and ``torchvision``
(the same code on the CPU); ``auto`` (or ``$CVSERVE_CROP_BACKEND``) picks nvjpeg where CUDA is
usable, else opencv. `crop_emitter` turns it into the `Emit` of a broker stage: one message per
crop, addressed to the next stage, with crop index and box headers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from cvserve.broker.schema import IMAGE_CONTENT_TYPES, Crop, Emit, Message, result_message
from cvserve.deploy.host import cuda_available
from cvserve.preprocess.preprocessor import Encoded
from cvserve.preprocess.sniff import sniff
from cvserve.preprocess.spec import PreprocessError
from cvserve.preprocess.tensors import BOXES, COUNT, SCORES

# Detector output names (x1, y1, x2, y2 in original-image pixels; scores; valid count).
# Added to a detect stage's result: how many crops were sent on for that request.
CROP_COUNT = "CROP_COUNT"

CROP_BACKEND_ENV = "CVSERVE_CROP_BACKEND"
# backend -> torch device it runs on (None: OpenCV)
CROP_BACKENDS: dict[str, str | None] = {"opencv": None, "nvjpeg": "cuda", "torchvision": "cpu"}


def resolve_crop_backend(backend: str = "auto") -> str:
    """A name of `CROP_BACKENDS`: ``auto`` reads ``$CVSERVE_CROP_BACKEND`` and, if that is unset
    or ``auto`` too, picks ``nvjpeg`` where CUDA is usable, else ``opencv``."""
    if backend == "auto":
        backend = os.environ.get(CROP_BACKEND_ENV, "auto")
    if backend == "auto":
        return "nvjpeg" if cuda_available() else "opencv"
    if backend not in CROP_BACKENDS:
        raise ValueError(f"crop backend {backend!r}: choose auto or one of {list(CROP_BACKENDS)}")
    return backend


@dataclass(frozen=True)
class CropImage:
    """One cut: its crop index and box, and the JPEG bytes."""

    crop: Crop
    jpeg: bytes


def _ranked_above(scores: np.ndarray, threshold: float) -> np.ndarray:
    """`models.postprocess_functions.ranked_above` on the host: indices of ``scores`` at least
    ``threshold``, best first (ties keep their order). NumPy, so that a broker worker does not
    load torch for the answers it already has on the host."""
    s = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    return order[s[order] >= threshold]


def select_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    width: int,
    height: int,
    score_threshold: float,
    max_crops: int,
) -> list[tuple[int, int, int, int]]:
    """Integer boxes (x1, y1, x2, y2) with score ≥ threshold, best first, at most ``max_crops``,
    clipped to the image; boxes left empty by clipping are dropped.

    ``boxes``: float [K, 4] in pixels of the image; ``scores``: float [K].
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    selected: list[tuple[int, int, int, int]] = []
    for i in _ranked_above(scores, score_threshold):
        x1, y1, x2, y2 = boxes[i]
        # Outward rounding keeps every pixel the box touches.
        box = (
            int(np.clip(np.floor(x1), 0, width)),
            int(np.clip(np.floor(y1), 0, height)),
            int(np.clip(np.ceil(x2), 0, width)),
            int(np.clip(np.ceil(y2), 0, height)),
        )
        if box[2] > box[0] and box[3] > box[1]:
            selected.append(box)
        if len(selected) == max_crops:
            break
    return selected


def cut_crops(
    image: bytes,
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float = 0.5,
    max_crops: int = 16,
    jpeg_quality: int = 90,
    backend: str = "opencv",
) -> list[CropImage]:
    """Decode ``image`` once, cut the selected boxes, JPEG-encode each (colours kept) with
    ``backend`` (a name of `CROP_BACKENDS`).

    Boxes are in pixels of the upright image (EXIF orientation applied), which is what a
    detector that saw the upright image reports. Raises `PreprocessError` if the image cannot be
    decoded.
    """
    device = CROP_BACKENDS[backend]
    if device is None:
        return _cut_opencv(image, boxes, scores, score_threshold, max_crops, jpeg_quality)
    from cvserve.broker.crop_torch import decode_upright, encode_boxes

    pixels = decode_upright(image, device)
    height, width = pixels.shape[1:]
    selected = select_boxes(boxes, scores, width, height, score_threshold, max_crops)
    encoded = encode_boxes(pixels, selected, jpeg_quality)
    return [
        CropImage(Crop(i, box), jpeg)
        for i, (box, jpeg) in enumerate(zip(selected, encoded, strict=True))
    ]


def _cut_opencv(
    image: bytes,
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float,
    max_crops: int,
    jpeg_quality: int,
) -> list[CropImage]:
    import cv2

    from cvserve.preprocess.opencv import decode_upright_bgr

    # The preprocessing stage's own decoding: the same EXIF (WebP too) and colour handling.
    header = sniff(image)
    pixels = decode_upright_bgr(Encoded(0, header.image_bytes(image), header))
    height, width = pixels.shape[:2]
    crops = []
    for index, box in enumerate(
        select_boxes(boxes, scores, width, height, score_threshold, max_crops)
    ):
        x1, y1, x2, y2 = box
        ok, encoded = cv2.imencode(
            ".jpg", pixels[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        )
        if not ok:
            raise PreprocessError(f"cannot JPEG-encode crop {index} {box}")
        crops.append(CropImage(Crop(index, box), encoded.tobytes()))
    return crops


def crop_emitter(
    next_stage: str, score_threshold: float, max_crops: int, backend: str = "auto"
) -> Emit:
    """The `Emit` of a detect stage: one message per crop for ``next_stage`` and the detections
    as a result (with `CROP_COUNT`, so a reader knows how many crops follow).
    ``backend`` is resolved on the first call (in the worker, not where the route is built)."""
    resolved: list[str] = []

    def emit(message: Message, outputs: Mapping[str, np.ndarray], stage: str) -> list[Message]:
        count = int(np.asarray(outputs[COUNT]).reshape(-1)[0]) if COUNT in outputs else None
        boxes, scores = outputs[BOXES][:count], outputs[SCORES][:count]
        if not resolved:
            resolved.append(resolve_crop_backend(backend))
        crops = cut_crops(
            message.value, boxes, scores, score_threshold, max_crops, backend=resolved[0]
        )
        counted = {**outputs, CROP_COUNT: np.array([len(crops)], dtype=np.int64)}
        emitted = [result_message(message, stage, counted)]
        for cut in crops:
            emitted.append(
                replace(
                    message,
                    stage=next_stage,
                    value=cut.jpeg,
                    content_type=IMAGE_CONTENT_TYPES["jpeg"],
                    crop=cut.crop,
                    trace=message.trace.child(),
                )
            )
        return emitted

    return emit
