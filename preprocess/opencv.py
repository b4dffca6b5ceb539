"""The OpenCV baseline: ``cv2.imdecode`` + resize + NumPy normalisation, a thread pool of images.

Filter: the spec's triangle, approximated with OpenCV's fast primitives per downscale factor
``s = in / out`` (every downscaled axis), all within the parity contract:

- ``s >= 4`` and an integer ``k <= s / 2`` divides both sides: ``INTER_AREA`` by ``k`` (its exact,
  fast integer path), then the triangle below on the rest, narrowed so the variances add up;
- otherwise ``s >= BOX_MIN_SCALE``: box blur of odd width ~``s`` then ``INTER_AREA`` (a box of
  width ``s``): box * box ~ triangle;
- ``PREFILTER_MIN_SCALE <= s``: triangle of radius ``s`` (``cv2.sepFilter2D``) then
  ``INTER_LINEAR``;
- ``1 < s < PREFILTER_MIN_SCALE``: the exact triangle (`preprocess.resample.banded_resize`,
  NumPy), since the prefilter pair strays up to 0.5 normalised units there;
- upscaling or ``antialias=False``: ``INTER_LINEAR``.

Edges are replicated, as the spec clamps its borders. OpenCV's own threading is left as
configured (``cv2.setNumThreads``).
Colour: OpenCV converts CMYK JPEG with ``>> 8`` where the spec (libjpeg, PIL, DALI) divides by
255: up to 1 level darker, mean ~0.017 normalised, inside the contract; 16-bit PNG is read at
full depth and rounded as the spec says; WebP EXIF orientation, which OpenCV ignores, is
applied from the header.

With ``reduced_decode`` (backend ``opencv-reduced``) a JPEG far larger than its output is decoded
at 1/2, 1/4 or 1/8 scale in the DCT domain (``IMREAD_REDUCED_COLOR_*``, libjpeg-turbo; the factor
from `preprocess.reduced_decode.jpeg_reduction`), then resized as above; META still describes the
original image. Other formats and milder downscales take the full decode.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from cvserve.preprocess.geometry import Placement, meta, placement
from cvserve.preprocess.pixels import orient, to_8bit
from cvserve.preprocess.preprocessor import (
    Encoded,
    PerImagePreprocessor,
    Preprocessed,
    decoder_error,
    finish,
    normalize_into,
)
from cvserve.preprocess.reduced_decode import MIN_REDUCED_SCALE, jpeg_reduction
from cvserve.preprocess.resample import banded_resize
from cvserve.preprocess.spec import PreprocessSpec

# Below this downscale factor a triangle prefilter + INTER_LINEAR differs from the spec's filter
# by up to 0.5 (normalised) at sharp edges; from it on by <= 0.3 (measured on synthetic images).
PREFILTER_MIN_SCALE = 1.75
# From this factor on, box blur + INTER_AREA is as close (<= 0.15) and 2-3x faster than the
# triangle prefilter, whose cost grows with the factor.
BOX_MIN_SCALE = 3.0
# ``cv2.imdecode`` flags of each DCT-domain reduction (EXIF orientation applied, as without).
REDUCED_FLAGS: dict[int, int] = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def triangle_kernel(scale: float) -> np.ndarray:
    """A 1-D triangle of radius ``scale`` pixels sampled at integer offsets, summing to 1
    (``[1]`` when not downscaling)."""
    if scale <= 1:
        return np.ones(1)
    reach = int(np.ceil(scale))
    kernel = np.clip(1 - np.abs(np.arange(-reach, reach + 1)) / scale, 0, None)
    return kernel / kernel.sum()


def _odd(width: float) -> int:
    return max(1, 2 * int(width // 2) + 1)


def _box_factor(height: int, width: int, scale: float) -> int:
    """The largest integer k <= scale / 2 dividing both sides (1 if none): INTER_AREA's exact
    (and fast) integer reduction, leaving a factor >= 2 for the triangle."""
    for k in range(int(scale // 2), 1, -1):
        if height % k == 0 and width % k == 0:
            return k
    return 1


def linear_resize(image: np.ndarray, height: int, width: int, antialias: bool) -> np.ndarray:
    """(H, W, C) uint8 → (height, width, C), uint8 (float32 from the exact path)."""
    scale_y, scale_x = image.shape[0] / height, image.shape[1] / width
    down = [s for s in (scale_y, scale_x) if s > 1]
    if not antialias or not down:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if min(down) < PREFILTER_MIN_SCALE:
        return banded_resize(image, height, width, antialias)
    k = _box_factor(*image.shape[:2], min(scale_y, scale_x))
    if k > 1:  # box of k, then a triangle narrowed so that the variances add up to the spec's
        image = cv2.resize(
            image, (image.shape[1] // k, image.shape[0] // k), interpolation=cv2.INTER_AREA
        )
        scale_y, scale_x = (math.sqrt(s * s - k * k / 2) / k for s in (scale_y, scale_x))
    elif min(scale_y, scale_x) >= BOX_MIN_SCALE:
        ksize = (_odd(scale_x), _odd(scale_y))
        blurred = cv2.blur(image, ksize, borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_AREA)
    kernels = [triangle_kernel(s) for s in (scale_x, scale_y)]
    blurred = cv2.sepFilter2D(image, -1, *kernels, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)


def decode_upright_bgr(item: Encoded) -> np.ndarray:
    """The whole image, upright (EXIF orientation applied, WebP's too), as BGR uint8 (H, W, 3);
    16-bit PNG rounded to 8 bits as the spec says. `PreprocessError` if OpenCV cannot decode it."""
    deep = item.header.bit_depth == 16
    data = np.frombuffer(item.data, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | (cv2.IMREAD_ANYDEPTH if deep else 0))
    if bgr is None:
        raise decoder_error(item)
    if deep:
        bgr = to_8bit(bgr)
    if item.header.format == "webp":  # OpenCV applies EXIF orientation to JPEG/PNG only
        bgr = np.ascontiguousarray(orient(bgr, item.header.orientation))
    return bgr


class OpenCVPreprocessor(PerImagePreprocessor):
    """The spec with OpenCV; ``threads`` images at a time (1: a plain loop). ``reduced_decode``:
    decode large JPEGs at a reduced scale when the output allows (see the module docstring)."""

    name = "opencv"
    filter = (
        "downscale >= 4x: integer INTER_AREA + triangle cv2.sepFilter2D + INTER_LINEAR (or "
        f"cv2.blur + INTER_AREA); >= {PREFILTER_MIN_SCALE}x: triangle cv2.sepFilter2D + "
        "INTER_LINEAR; milder: exact triangle (NumPy); upscale: INTER_LINEAR"
    )
    decoder_errors = (cv2.error, RuntimeError, ValueError)

    def __init__(
        self,
        spec: PreprocessSpec,
        max_batch_size: int = 32,
        threads: int = 1,
        reduced_decode: bool = False,
    ) -> None:
        super().__init__(spec, max_batch_size, threads)
        self.reduced_decode = reduced_decode

    def _one(self, item: Encoded) -> Preprocessed:
        bgr, p = self._decode(item)
        resized = linear_resize(bgr, p.resized_h, p.resized_w, self.spec.antialias)
        canvas = np.empty((p.out_h, p.out_w, 3), np.float32)
        normalize_into(canvas, resized[..., ::-1], p, self.spec)  # BGR → RGB
        return Preprocessed(finish(canvas, self.spec), meta(p))

    def _decode(self, item: Encoded) -> tuple[np.ndarray, Placement]:
        """Upright BGR uint8 (reduced, where allowed) and the placement of the original image."""
        data = np.frombuffer(item.data, np.uint8)
        reduction = jpeg_reduction(item.header, self.spec) if self.reduced_decode else 1
        if reduction > 1:
            bgr = cv2.imdecode(data, REDUCED_FLAGS[reduction])
            p = placement(*item.header.upright_size, self.spec)
            if bgr is not None and bgr.shape[:2] == (p.orig_h // reduction, p.orig_w // reduction):
                return bgr, p
            # The header disagrees with the decoder: decode in full, as without the option.
        bgr = decode_upright_bgr(item)
        return bgr, placement(bgr.shape[0], bgr.shape[1], self.spec)


class ReducedDecodeOpenCVPreprocessor(OpenCVPreprocessor):
    """`OpenCVPreprocessor` with ``reduced_decode`` on: backend ``opencv-reduced``."""

    name = "opencv-reduced"
    filter = (
        "JPEG decoded at 1/2, 1/4 or 1/8 (libjpeg DCT scaling) while >= "
        f"{MIN_REDUCED_SCALE}x the resized size remains, then as opencv: "
        + OpenCVPreprocessor.filter
    )

    def __init__(self, spec: PreprocessSpec, max_batch_size: int = 32, threads: int = 1) -> None:
        super().__init__(spec, max_batch_size, threads, reduced_decode=True)
