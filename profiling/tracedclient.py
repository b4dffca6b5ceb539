"""A pipeline client that records the spans of every request it sends (one image per request).

Two placements of preprocessing: the server's (encoded bytes to the ``<task>`` ensemble) or the
client's (`NaivePreprocessor`, then tensors to ``<task>_tensor``). Each request carries its own
request id, which Triton writes into its trace: `tritontrace.attach_triton` joins them later.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from cvserve.deploy.triton_grpc import grpc_client
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import PREPROCESS_TIMES, TIME_TENSORS, reported_stage_times
from cvserve.preprocess.naive import NaivePreprocessor
from cvserve.preprocess.tensors import IMAGE, META, PIXELS, pad_images
from cvserve.profiling.trace import Trace

CALL_START, CALL_END = "call_start", "call_end"


class _Unrecorded:
    """Stands in for a `Trace` when profiling is off: the same calls, nothing kept."""

    request_id = ""
    marks: dict[str, int] = {}  # noqa: RUF012 - written, never read
    attributes: dict[str, object] = {}  # noqa: RUF012

    @contextlib.contextmanager
    def span(self, kind: str, name: str | None = None, parent: Any = None) -> Iterator[None]:
        yield


class TracedSender:
    """Sends ``images[i % len(images)]`` (files, read per request) to ``ensemble`` at ``url``.

    With ``preprocessor`` the client preprocesses and sends tensors (``ensemble`` is then a
    `pipelines.variants.tensor_input` pipeline). ``record=False`` sends the same requests
    without keeping spans (profiling off). Not thread-safe: one sender per client thread.
    """

    def __init__(
        self,
        url: str,
        ensemble: PipelineSpec,
        images: Sequence[Path],
        preprocessor: NaivePreprocessor | None = None,
        tag: str = "r",
        record: bool = True,
        timeout_s: float = 120.0,
    ) -> None:
        self.ensemble = ensemble
        self.images = list(images)
        self.preprocessor = preprocessor
        self.tag = tag
        self.record = record
        self.timeout_s = timeout_s
        self.traces: list[Trace] = []
        self._client = grpc_client(url)
        self._outputs = [t.name for t in ensemble.outputs]

    def _tensors(self, trace: Trace | _Unrecorded, data: bytes) -> dict[str, np.ndarray]:
        if self.preprocessor is None:
            return {IMAGE: pad_images([data])}
        with trace.span("decode"):
            rgb = self.preprocessor.decode(data)
        with trace.span("resize_crop"):
            canvas, meta = self.preprocessor.resize_crop(rgb)
        with trace.span("normalize"):
            pixels = self.preprocessor.normalize(canvas)
        # The pixels input is named as the model's (PIXELS for cvserve's own networks).
        pixels_name = next((t.name for t in self.ensemble.inputs if t.name != META), PIXELS)
        return {pixels_name: pixels[None], META: meta[None]}

    def __call__(self, i: int) -> dict[str, np.ndarray]:
        trace: Trace | _Unrecorded = (
            Trace(f"{self.tag}-{i}").begin() if self.record else (_Unrecorded())
        )
        with trace.span("read"):
            data = self.images[i % len(self.images)].read_bytes()
        arrays = self._tensors(trace, data)
        with trace.span("serialize"):
            inputs = []
            for spec in self.ensemble.inputs:
                array = arrays[spec.name]
                tensor = grpcclient.InferInput(spec.name, list(array.shape), spec.triton_dtype)
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            outputs = [grpcclient.InferRequestedOutput(n) for n in self._outputs]
        call_start = time.monotonic_ns()
        result = self._client.infer(
            self.ensemble.name,
            inputs,
            outputs=outputs,
            request_id=trace.request_id,
            client_timeout=self.timeout_s,
        )
        call_end = time.monotonic_ns()
        with trace.span("deserialize"):
            out = {n: result.as_numpy(n) for n in self._outputs}
        if isinstance(trace, Trace):
            trace.finish()
            trace.marks.update({CALL_START: call_start, CALL_END: call_end})
            trace.attributes["request_bytes"] = int(
                sum(arrays[s.name].nbytes for s in self.ensemble.inputs)
            )
            # The first image's row of each time tensor (every image of a batch has the same).
            first = {t.name: out[t.name][0] for t in TIME_TENSORS if t.name in out}
            if PREPROCESS_TIMES.name in first:
                trace.attributes["preprocess_ns"] = [int(v) for v in first[PREPROCESS_TIMES.name]]
            stage_ns = reported_stage_times(first)
            if stage_ns is not None:
                trace.attributes["stage_ns"] = stage_ns
            self.traces.append(trace)
        return out

    def close(self) -> None:
        self._client.close()
