"""Real camera files: a JPEG followed by a trailer (a motion photo's video, a maker's data) is
the JPEG before it; a JPEG whose data ends before its end-of-image marker is still refused;
HEIC and AVIF are named, not "not a recognised image"."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from preprocess_cases import CPU_BACKENDS

from cvserve.preprocess.backends import make_preprocessor
from cvserve.preprocess.sniff import sniff
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec
from cvserve.preprocess.synthetic import colour_case, synthetic_image


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def motion_photo_video() -> bytes:
    """An MP4 as phones append it: ftyp, then an mdat of (random) media bytes."""
    media = np.random.default_rng(7).integers(0, 256, 6000, dtype=np.uint8).tobytes()
    return box(b"ftyp", b"mp42\x00\x00\x00\x00isommp42") + box(b"mdat", media)


def trailers() -> dict[str, bytes]:
    random = np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    return {"random 5 KB": random, "MP4 video": motion_photo_video(), "FFD9 inside": b"\xff\xd9x"}


JPEGS = {
    "baseline": synthetic_image(320, 240, seed=1),
    "exif6": colour_case("exif6_jpeg", 96, 64, seed=2),
    "cmyk": colour_case("cmyk_jpeg", 80, 60, seed=3),
}


@pytest.mark.parametrize("trailer", list(trailers()))
@pytest.mark.parametrize("name", list(JPEGS))
def test_the_header_ends_the_image_at_its_end_of_image_marker(name: str, trailer: str) -> None:
    jpeg = JPEGS[name]
    with_trailer = jpeg + trailers()[trailer]
    header = sniff(with_trailer)
    assert header.image_bytes(with_trailer) == jpeg
    assert header == sniff(jpeg) and header.length == len(jpeg)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_backend_answers_a_jpeg_with_a_trailer_as_the_jpeg_alone(backend: str) -> None:
    spec = PreprocessSpec(crop=(64, 64), resize_shorter=72)
    images = list(JPEGS.values())
    with make_preprocessor(spec, backend, max_batch_size=8, threads=1) as pre:
        plain = pre.run_batch_with_meta(images)
        for trailer in trailers().values():
            got = pre.run_batch_with_meta([image + trailer for image in images])
            np.testing.assert_array_equal(got[0], plain[0])
            np.testing.assert_array_equal(got[1], plain[1])


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_jpeg_cut_before_its_end_of_image_marker_is_still_truncated(cut: float) -> None:
    jpeg = JPEGS["baseline"]
    with pytest.raises(PreprocessError, match="truncated JPEG"):
        sniff(jpeg[: int(len(jpeg) * cut)])


@pytest.mark.parametrize(
    ("brand", "name"), [(b"heic", "HEIC"), (b"heix", "HEIC"), (b"avif", "AVIF"), (b"mif1", "HEIF")]
)
def test_heic_and_avif_are_named_as_unsupported(brand: bytes, name: str) -> None:
    data = box(b"ftyp", brand + b"\x00\x00\x00\x00" + brand + b"mif1") + box(b"mdat", b"\x00" * 64)
    with pytest.raises(PreprocessError, match=f"^unsupported format: {name}$"):
        sniff(data)
