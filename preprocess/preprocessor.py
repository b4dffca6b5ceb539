"""The interface every preprocessing backend implements, and what the backends share.

``Preprocessor.__call__(images) -> list[Preprocessed | PreprocessError]``: one result per image,
in order. Each image is unpadded, sniffed and refused with a reason (empty, unknown or refused
format, truncated, too many pixels) before any decoding; one bad image fails only itself.
Images are processed in chunks of at most ``max_batch_size`` images and ``spec.max_batch_pixels``
decoded pixels, so memory stays bounded whatever a request holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import numpy as np

from cvserve.preprocess.geometry import Placement, visible_window
from cvserve.preprocess.sniff import ImageHeader, sniff, unpadded
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec

# The steps a backend may time, in order (the order of the profiler's PREPROCESS_TIMES).
STEPS: tuple[str, ...] = ("decode", "resize_crop", "normalize")


@dataclass(frozen=True)
class Preprocessed:
    """One image's output: ``pixels`` of ``spec.output_shape`` and ``spec.dtype`` (a NumPy array
    on the CPU; a ``torch.Tensor`` on ``cuda`` for GPU backends) and ``meta``, float32 [6]
    ``(orig_h, orig_w, scale_y, scale_x, pad_top, pad_left)`` (see `preprocess.geometry`).

    A batch backend sets ``batch`` to the (N, ...) array its pixels are row ``row`` of, so that
    a request of consecutive images is handed on as a view of it (`stack_results`), not a copy.
    """

    pixels: Any
    meta: np.ndarray
    batch: Any = field(default=None, repr=False, compare=False)
    row: int = 0


Result = Preprocessed | PreprocessError


@dataclass(frozen=True)
class Encoded:
    """An image that passed the header checks: its position in the request, unpadded bytes,
    header."""

    index: int
    data: bytes
    header: ImageHeader

    @property
    def pixels(self) -> int:
        return self.header.width * self.header.height


class Preprocessor(ABC):
    """A backend running a `PreprocessSpec` on lists of encoded images."""

    name: ClassVar[str]
    filter: ClassVar[str]  # the resampling filter it uses, in words

    def __init__(self, spec: PreprocessSpec, max_batch_size: int = 32) -> None:
        self.spec = spec
        self.max_batch_size = max_batch_size

    def __call__(self, images: Sequence[bytes | np.ndarray]) -> list[Result]:
        """One `Preprocessed` or `PreprocessError` (with its ``index``) per image, in order."""
        results: list[Result | None] = [None] * len(images)
        valid: list[Encoded] = []
        for index, image in enumerate(images):
            data = unpadded(image)
            try:
                header = sniff(data, self.spec.max_pixels, self.spec.formats)
            except PreprocessError as exc:
                results[index] = exc.at(index)
                continue
            valid.append(Encoded(index, header.image_bytes(data), header))
        for chunk in self._chunks(valid):
            for item, result in zip(chunk, self._process(chunk), strict=True):
                results[item.index] = (
                    result.at(item.index) if isinstance(result, PreprocessError) else result
                )
        return results  # type: ignore[return-value]

    def run_batch_with_meta(self, images: Sequence[bytes | np.ndarray]) -> tuple[Any, np.ndarray]:
        """``(pixels (N, *spec.output_shape), meta (N, 6))``; raises a `PreprocessError` naming
        every bad image."""
        return stack_results(self(images))

    def run_batch(self, images: Sequence[bytes | np.ndarray]) -> Any:
        """All images' pixels as one ``(N, *spec.output_shape)`` array (a tensor on GPU);
        raises the first bad image's `PreprocessError`."""
        return self.run_batch_with_meta(images)[0]

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release threads and pipelines."""

    def __enter__(self) -> Preprocessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _process(self, chunk: list[Encoded]) -> list[Result]:
        """Results of a chunk of sniffed images (errors may leave ``index`` unset)."""

    def _chunks(self, valid: list[Encoded]) -> Iterator[list[Encoded]]:
        chunk: list[Encoded] = []
        pixels = 0
        for item in valid:
            if chunk and (
                len(chunk) == self.max_batch_size
                or pixels + item.pixels > self.spec.max_batch_pixels
            ):
                yield chunk
                chunk, pixels = [], 0
            chunk.append(item)
            pixels += item.pixels
        if chunk:
            yield chunk


def stack_results(results: Sequence[Result]) -> tuple[Any, np.ndarray]:
    """Pixels ``(N, ...)`` (NumPy, or torch on GPU) and META ``(N, 6)`` of one request's results;
    if any failed, raises one `PreprocessError` reading ``image i: reason; image j: reason`` with
    ``i``, ``j`` positions in ``results``. Consecutive rows of one backend batch come back as a
    view of it (no copy: a copy of a fresh array costs more than the rest of the hand-off)."""
    bad = [(i, r) for i, r in enumerate(results) if isinstance(r, PreprocessError)]
    if bad:
        raise PreprocessError("; ".join(f"image {i}: {r.reason}" for i, r in bad))
    if not results:
        raise PreprocessError("no images")
    done: list[Preprocessed] = list(results)  # type: ignore[arg-type]
    metas = np.stack([r.meta for r in done])
    first = done[0]
    if first.batch is not None and all(
        r.batch is first.batch and r.row == first.row + i for i, r in enumerate(done)
    ):
        return first.batch[first.row : first.row + len(done)], metas
    pixels = [r.pixels for r in done]
    if len({tuple(p.shape) for p in pixels}) > 1:
        pixels = _padded(pixels)
    if isinstance(pixels[0], np.ndarray):
        return np.stack(pixels), metas
    import torch

    return torch.stack(pixels), metas


def _padded(pixels: list[Any]) -> list[Any]:
    """Images of a ``dynamic`` spec, of different sizes, zero-padded on the right and bottom to
    the largest of the request (every axis to its largest: the channels are equal), so that a
    request is one tensor, as a model with dynamic axes is fed a batch; META is unchanged,
    every placement being at the top left."""
    shape = tuple(max(p.shape[axis] for p in pixels) for axis in range(pixels[0].ndim))
    out = []
    for p in pixels:
        canvas = np.zeros(shape, p.dtype) if isinstance(p, np.ndarray) else p.new_zeros(shape)
        canvas[tuple(slice(0, n) for n in p.shape)] = p
        out.append(canvas)
    return out


def decoder_error(item: Encoded) -> PreprocessError:
    """The error of an image whose header was fine but whose data the decoder refused (the same
    words for every backend; decoders' own messages are long and differ)."""
    return PreprocessError(f"corrupt {item.header.format.upper()}: the decoder could not read it")


class PerImagePreprocessor(Preprocessor):
    """A backend that handles one image at a time (`_one`), ``threads`` images in parallel.

    ``threads=1`` runs a plain loop in the calling thread (the single-thread baseline).
    """

    # Exceptions a decoder raises on data it cannot read (besides `PreprocessError`).
    decoder_errors: ClassVar[tuple[type[BaseException], ...]] = (RuntimeError, ValueError)

    def __init__(self, spec: PreprocessSpec, max_batch_size: int = 32, threads: int = 1) -> None:
        super().__init__(spec, max_batch_size)
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None

    @abstractmethod
    def _one(self, item: Encoded) -> Preprocessed:
        """Preprocess one image; raise `PreprocessError` or one of `decoder_errors` if it fails."""

    def _process(self, chunk: list[Encoded]) -> list[Result]:
        run: Callable[[Encoded], Result] = self._guarded
        return list(self._pool.map(run, chunk)) if self._pool else [run(i) for i in chunk]

    def _guarded(self, item: Encoded) -> Result:
        try:
            return self._one(item)
        except PreprocessError as exc:
            return exc
        except self.decoder_errors:
            return decoder_error(item)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def normalize_into(canvas: Any, resized: Any, p: Placement, spec: PreprocessSpec) -> Any:
    """Write the visible part of ``resized`` (h, w, 3) RGB into ``canvas`` (out_h, out_w, 3) as
    ``(pixel - mean) / std`` in ``spec.channels`` order, and ``spec.normalized_pad`` everywhere
    else. NumPy arrays or torch tensors alike (``canvas`` sets the float type and device);
    returns ``canvas``."""
    if hasattr(canvas, "new_tensor"):  # torch
        constant: Callable[[Any], Any] = canvas.new_tensor
    else:
        constant = partial(np.asarray, dtype=canvas.dtype)
    window = visible_window(p, spec)
    if canvas[window.out_rows, window.out_cols].shape != canvas.shape:
        canvas[...] = constant(spec.normalized_pad)
    visible = resized[window.src_rows, window.src_cols]
    if spec.channels == "BGR":
        visible = visible[..., [2, 1, 0]]  # an index list: torch has no negative steps
    canvas[window.out_rows, window.out_cols] = (visible - constant(spec.mean)) / constant(spec.std)
    return canvas


def finish(canvas: Any, spec: PreprocessSpec) -> Any:
    """An (H, W, 3) float canvas in ``spec.layout`` (contiguous) and ``spec.dtype``; NumPy or
    torch alike."""
    if hasattr(canvas, "permute"):  # torch
        import torch

        out = canvas.permute(2, 0, 1) if spec.layout == "CHW" else canvas
        return out.to(getattr(torch, spec.dtype)).contiguous()
    out = canvas.transpose(2, 0, 1) if spec.layout == "CHW" else canvas
    return np.ascontiguousarray(out, dtype=spec.dtype)
