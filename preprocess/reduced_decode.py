"""Reduced-resolution JPEG decoding: how far a JPEG may be shrunk in the DCT domain before resizing.

libjpeg(-turbo) can decode at 1/2, 1/4 or 1/8 scale by running a smaller inverse DCT per 8x8
block (OpenCV's ``IMREAD_REDUCED_COLOR_*``): each output pixel is roughly the mean of an r x r
block, and the decoder skips most of its IDCT, upsampling and colour work. The spec's triangle
then runs on the reduced image. That stays within the contract only while the reduced image keeps
enough pixels per output pixel for the triangle to dominate the block average: see
`MIN_REDUCED_SCALE`. META is unaffected: it is computed from the original (upright) size.
"""

from __future__ import annotations

from cvserve.preprocess.geometry import placement
from cvserve.preprocess.sniff import ImageHeader
from cvserve.preprocess.spec import PreprocessSpec

# Reductions libjpeg offers, largest first.
REDUCTIONS: tuple[int, ...] = (8, 4, 2)
# A reduction r is used only while the reduced image keeps at least this many pixels per resized
# pixel along each axis (``min(in / out) / r >= MIN_REDUCED_SCALE``, i.e. 4x the pixels).
# Measured on the synthetic photographs (shapes, gradients, noise; q75-90, 4:2:0 and 4:4:4) vs
# the float64 reference, worst max |diff| (normalised): 0.45 at 1.5, 0.26 at 1.8, <= 0.20 from
# 2.0 on, against the contract's 0.5 (full decode: <= 0.19); the mean stays < 0.01 throughout.
MIN_REDUCED_SCALE = 2.0


def jpeg_reduction(header: ImageHeader, spec: PreprocessSpec) -> int:
    """The DCT-domain reduction (8, 4, 2, or 1 = none) to decode ``header``'s image with under
    ``spec``: the largest keeping `MIN_REDUCED_SCALE` on both axes of its resize.

    Only 8-bit JPEG, only when downscaling with ``antialias`` (without it the spec samples single
    pixels, which a block average is not), and only a factor dividing both sides, so that the
    reduced image covers exactly the original (libjpeg rounds partial blocks up).
    """
    if header.format != "jpeg" or header.bit_depth != 8 or not spec.antialias:
        return 1
    height, width = header.upright_size
    p = placement(height, width, spec)
    scale = min(height / p.resized_h, width / p.resized_w)
    for reduction in REDUCTIONS:
        if (
            height % reduction == 0
            and width % reduction == 0
            and scale / reduction >= MIN_REDUCED_SCALE
        ):
            return reduction
    return 1
