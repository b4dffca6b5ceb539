"""Crops on a torch device: nvJPEG decode + crop + nvJPEG encode on CUDA.

The pixels stay on the device from decode to encode; only the encoded crops come back. JPEGs are
decoded by torchvision's ``decode_jpeg(device=...)`` (nvJPEG on CUDA, which ignores EXIF
orientation: it is applied from the header), other formats on the CPU and moved. All crops of an
image are encoded in one call of nvImageCodec's encoder (the one DALI ships; batched nvJPEG on
CUDA, libjpeg-turbo on the CPU) at 4:2:0 chroma subsampling, as OpenCV and libjpeg encode:
torchvision's CUDA ``encode_jpeg`` fixes 4:4:4, whose crops of a colour image differed from
OpenCV's by 4–8.6 levels on average (the same crops at 4:2:0: 0). On ``cpu`` the same code runs,
which is how it is tested on machines without a GPU.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from cvserve.preprocess.preprocessor import Encoded
from cvserve.preprocess.sniff import sniff
from cvserve.preprocess.spec import PreprocessError
from cvserve.preprocess.torchvision_backend import decode_cpu, orient_chw


def decode_upright(image: bytes, device: str) -> torch.Tensor:
    """Upright RGB (3, H, W) uint8 on ``device``; `PreprocessError` if it cannot be decoded."""
    header = sniff(image)
    image = header.image_bytes(image)  # without a camera's trailer
    try:
        if header.format == "jpeg":
            data = torch.frombuffer(bytearray(image), dtype=torch.uint8)
            pixels = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            return orient_chw(pixels, header.orientation)
        return decode_cpu(Encoded(0, image, header)).to(device)
    except (RuntimeError, ValueError, OSError) as exc:
        raise PreprocessError(f"cannot decode the image to crop: {exc}") from exc


def encode_boxes(
    pixels: torch.Tensor, boxes: list[tuple[int, int, int, int]], quality: int
) -> list[bytes]:
    """JPEG bytes (quality ``quality``, 4:2:0) of each (x1, y1, x2, y2) cut of ``pixels``
    (3, H, W) uint8, encoded together on ``pixels``' device."""
    if not boxes:
        return []
    import nvidia.nvimgcodec as nvimgcodec

    # nvImageCodec takes interleaved HWC images; torch tensors by their array interfaces.
    tiles = [pixels[:, y1:y2, x1:x2].permute(1, 2, 0).contiguous() for x1, y1, x2, y2 in boxes]
    params = nvimgcodec.EncodeParams(
        quality_type=nvimgcodec.QualityType.QUALITY,
        quality_value=quality,
        chroma_subsampling=nvimgcodec.ChromaSubsampling.CSS_420,
    )
    encoder, lock = _encoder(pixels.device)
    if pixels.is_cuda:  # encode on torch's stream, after the kernels that cut the tiles
        images = [nvimgcodec.as_image(t) for t in tiles]
        stream = torch.cuda.current_stream(pixels.device).cuda_stream
        with lock:
            encoded = encoder.encode(images, "jpeg", params=params, cuda_stream=stream)
    else:
        images = [nvimgcodec.as_image(t.numpy()) for t in tiles]
        with lock:
            encoded = encoder.encode(images, "jpeg", params=params)
    if any(e is None for e in encoded):
        raise RuntimeError(f"nvImageCodec could not encode {encoded.count(None)} crop(s)")
    return [bytes(e) for e in encoded]


_ENCODERS: dict[str, tuple[Any, threading.Lock]] = {}
_ENCODERS_LOCK = threading.Lock()


def _encoder(device: torch.device) -> tuple[Any, threading.Lock]:
    """nvImageCodec's encoder for ``device`` (made once; its own lock: a worker cuts crops from
    several threads), with the CPU backend only on ``cpu``."""
    import nvidia.nvimgcodec as nvimgcodec

    key = str(device)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            if device.type == "cuda":
                encoder = nvimgcodec.Encoder(device_id=device.index or 0)
            else:
                encoder = nvimgcodec.Encoder(
                    device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                    backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)],
                )
            _ENCODERS[key] = (encoder, threading.Lock())
        return _ENCODERS[key]
