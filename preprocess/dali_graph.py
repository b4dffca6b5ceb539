"""DALI preprocessing graphs built from a `PreprocessSpec` (run by `preprocess.dali`).

The graph reads top to bottom as the data flows: encoded bytes → header shape (EXIF-oriented)
→ `preprocess.geometry.placement` evaluated on DALI nodes → decode (RGB, EXIF applied) → resize
to the placement's size → crop/pad + normalise (+ layout, dtype) in one ``crop_mirror_normalize``
(a centre crop inside the resized image resizes only the input region it covers instead); META
comes out as a second output, computed on the CPU from the header alone. The graph is
`decode_step` → `resize_step` → `normalize_step` (+ `meta_node`); `preprocess.dali_steps` runs
the same steps as separate pipelines to time each.

``device="cpu"`` runs with ``device_id=None`` (no GPU needed). ``device="gpu"`` decodes with
``mixed`` (nvImageCodec: nvJPEG or the A100/H100 hardware decoder, ``hw_decoder_load``), resizes
and normalises on the GPU, and leaves the pixels there (torch tensors). Filter: DALI's
``INTERP_LINEAR`` with ``antialias``: the spec's triangle filter, borders clamped, exactly (the
float64 reference differs from it by the 8-bit rounding of the resized image). Known limitation
(DALI 2.4):
a lossless WebP carrying EXIF (VP8X + VP8L) is refused as corrupt.
"""

from __future__ import annotations

from typing import Any, Literal

import nvidia.dali.math as dmath
from nvidia.dali import backend, fn, pipeline_def, types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import Pipeline

from cvserve.deploy.host import usable_cores
from cvserve.preprocess.geometry import Placement, meta_values, placement
from cvserve.preprocess.spec import Channels, PreprocessSpec
from cvserve.preprocess.tensors import IMAGE

# Share of JPEG decoding sent to the hardware decoder (A100/H100) in ``mixed`` decoding.
HW_DECODER_LOAD = 0.65

_DALI_DTYPES = {"float32": types.FLOAT, "float16": types.FLOAT16}


def gpu_count() -> int:
    """CUDA devices DALI can see (0 without a GPU or driver)."""
    return backend.GetCUDADeviceCount()


def _float_node(value: Any) -> DataNode:
    if isinstance(value, DataNode):
        return fn.cast(value, dtype=types.FLOAT)
    return types.Constant(float(value), dtype=types.FLOAT, device="cpu")


def _float_vector(*values: Any) -> Any:
    """A per-sample float vector argument: a plain list if every value is a Python number."""
    if not any(isinstance(v, DataNode) for v in values):
        return [float(v) for v in values]
    return fn.stack(*(_float_node(v) for v in values))


def _crop_pos(offset: Any, resized: Any, out: int) -> Any:
    """``crop_mirror_normalize``'s normalised anchor putting the resized image at ``offset``:
    anchor = pos * (resized - out) = -offset (0 / 1 when the extents match)."""
    span = resized - out
    return -offset / (span + (span == 0))


def _input_coordinate(p: Placement, y: int, x: int) -> tuple[Any, Any]:
    """Input-image coordinates (continuous) of output point (y, x): ``(y - top) / scale``."""
    return (
        _float_node((y - p.top) * p.orig_h) / _float_node(p.resized_h),
        _float_node((x - p.left) * p.orig_w) / _float_node(p.resized_w),
    )


def placement_of(encoded: DataNode, spec: PreprocessSpec) -> Placement:
    """`placement` of each encoded image on DALI nodes, from its header (EXIF-oriented shape)."""
    shape = fn.peek_image_shape(encoded)  # (H, W, C) after EXIF orientation
    return placement(shape[0], shape[1], spec, minimum=dmath.min, maximum=dmath.max)


def decode_step(
    encoded: DataNode,
    device: Literal["cpu", "gpu"],
    hw_decoder_load: float = HW_DECODER_LOAD,
    channels: Channels = "RGB",
) -> DataNode:
    """Encoded bytes → upright uint8 HWC in ``channels`` order (on ``device``; ``mixed``
    decoding on the GPU)."""
    order = types.BGR if channels == "BGR" else types.RGB
    if device == "gpu":
        return fn.decoders.image(
            encoded,
            device="mixed",
            output_type=order,
            hw_decoder_load=hw_decoder_load,
            jpeg_fancy_upsampling=True,  # as libjpeg on the CPU
        )
    return fn.decoders.image(encoded, device="cpu", output_type=order)


def _crop_inside(spec: PreprocessSpec) -> bool:
    """Whether the centre crop always lies inside the resized image (``shorter_crop``)."""
    return spec.resize_mode == "shorter_crop" and spec.resize_shorter >= max(spec.output_size)


def resize_step(images: DataNode, p: Placement, spec: PreprocessSpec) -> DataNode:
    """Decoded images → resized, uint8. When the crop lies inside the resized image, only the
    input region it covers is resized, to the output size (same pixels as resizing everything
    then cropping, half the work at 16:9): the crop happens here."""
    resize = {"antialias": spec.antialias, "interp_type": types.INTERP_LINEAR}
    if _crop_inside(spec):
        out_h, out_w = spec.output_size
        return fn.resize(
            images,
            size=[float(out_h), float(out_w)],
            roi_start=_float_vector(*_input_coordinate(p, 0, 0)),
            roi_end=_float_vector(*_input_coordinate(p, out_h, out_w)),
            roi_relative=False,
            **resize,
        )
    return fn.resize(images, size=_float_vector(p.resized_h, p.resized_w), **resize)


def normalize_step(resized: DataNode, p: Placement, spec: PreprocessSpec) -> DataNode:
    """Resized images → ``(pixel - mean) / std`` in ``spec.layout`` and ``spec.dtype``; where the
    resize did not crop, ``crop_mirror_normalize`` also crops / pads them to the output size."""
    normalize = {
        "mean": list(spec.mean),
        "std": list(spec.std),
        "output_layout": spec.layout,
        "dtype": _DALI_DTYPES[spec.dtype],
    }
    if _crop_inside(spec):
        return fn.crop_mirror_normalize(resized, **normalize)
    out_h, out_w = p.out_h, p.out_w
    # A dynamic output has its size per image (nodes); the others one size for all.
    size = (
        {"crop_h": _float_node(out_h), "crop_w": _float_node(out_w)}
        if spec.dynamic
        else {"crop": spec.output_size}
    )
    return fn.crop_mirror_normalize(
        resized,
        **size,
        crop_pos_y=_crop_pos(p.top, p.resized_h, out_h),
        crop_pos_x=_crop_pos(p.left, p.resized_w, out_w),
        out_of_bounds_policy="pad",
        fill_values=list(spec.normalized_pad),  # in output units
        **normalize,
    )


def meta_node(p: Placement) -> DataNode:
    """META float32 [6] per image (CPU), see `preprocess.geometry.meta`."""
    return fn.stack(*(_float_node(v) for v in meta_values(p)))


def preprocess_graph(
    encoded: DataNode,
    spec: PreprocessSpec,
    device: Literal["cpu", "gpu"],
    hw_decoder_load: float = HW_DECODER_LOAD,
) -> tuple[DataNode, DataNode]:
    """DALI nodes turning a batch of encoded images into ``(pixels, meta)`` per ``spec``:
    pixels ``spec.output_shape`` ``spec.dtype`` (on ``device``), meta float32 [6] (CPU)."""
    p = placement_of(encoded, spec)
    images = decode_step(encoded, device, hw_decoder_load, spec.channels)
    pixels = normalize_step(resize_step(images, p, spec), p, spec)
    return pixels, meta_node(p)


def define_pipeline(
    spec: PreprocessSpec,
    max_batch_size: int,
    num_threads: int | None = None,
    device: Literal["cpu", "gpu"] | None = None,
    device_id: int | None = 0,
    input_name: str = IMAGE,
    hw_decoder_load: float = HW_DECODER_LOAD,
    with_meta: bool = True,
) -> Pipeline:
    """An unbuilt DALI pipeline: one external input ``input_name`` (uint8 bytes), outputs
    ``(pixels, meta)`` (``pixels`` alone without ``with_meta``). A CPU pipeline always gets
    ``device_id=None``; give a GPU pipeline ``None`` only to serialise it (it cannot run)."""
    device = device or spec.device

    @pipeline_def(
        batch_size=max_batch_size,
        num_threads=num_threads or usable_cores(),
        device_id=device_id if device == "gpu" else None,
        prefetch_queue_depth=1,
    )
    def _pipeline() -> tuple[DataNode, ...]:
        encoded = fn.external_source(name=input_name, dtype=types.UINT8, ndim=1)
        pixels, meta = preprocess_graph(encoded, spec, device, hw_decoder_load)
        return (pixels, meta) if with_meta else (pixels,)

    return _pipeline()


def build_pipeline(
    spec: PreprocessSpec,
    max_batch_size: int,
    num_threads: int | None = None,
    device: Literal["cpu", "gpu"] | None = None,
    device_id: int | None = 0,
    hw_decoder_load: float = HW_DECODER_LOAD,
) -> Pipeline:
    """`define_pipeline`, built and ready to run."""
    pipe = define_pipeline(
        spec, max_batch_size, num_threads, device, device_id, hw_decoder_load=hw_decoder_load
    )
    pipe.build()
    return pipe
