"""Triton adapter of a fused stage (`models.fusion`): encoded images → preprocessing → the DNN
→ postprocessing, in one stub, on this instance's device (on a GPU: DALI ``mixed`` decodes
there and nothing but the answers crosses to the host). Per request the same as the stages'
adapters chained: a request whose image cannot be preprocessed, or whose postprocessing raises,
gets that error; the rest of the batch is answered, the DNN running once on every preprocessed
request together.

Profiling (`pipelines.variants`): when a request of the batch asks for ``STAGE_TIMES`` (the
config declares it, `models.fusion`), each answer also carries int64 [9], the ns its Triton
batch spent preprocessing, in the DNN, postprocessing and copying the answers to the host, at
their places of `pipelines.variants.TIMED` (`models.part_times`: CUDA events on a GPU); nothing
is timed otherwise. When the config declares ``PREPROCESS_TIMES``
(`with_preprocess_times`), DALI runs its steps apart and each answer carries their ns, as the
preprocess stage's adapter does.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import torch
import triton_python_backend_utils as pb_utils

from cvserve.models.devices import instance_device, release, settled
from cvserve.models.engine_choice import load_chosen
from cvserve.models.params import FusedParams
from cvserve.models.part_times import PartTimes
from cvserve.models.postprocessor import Postprocessor
from cvserve.models.repository.config import config_tensors
from cvserve.models.runners import as_batch
from cvserve.models.triton.base import (
    exception_response,
    in_version_folder,
    input_names,
    input_tensor,
    max_batch_size,
    output_names,
    output_tensor,
    postprocessed_responses,
    stage_params,
    with_times,
)
from cvserve.pipelines.variants import PREPROCESS_TIMES, STAGE_TIMES
from cvserve.preprocess.backends import make_preprocessor
from cvserve.preprocess.preprocessor import stack_results
from cvserve.preprocess.spec import PreprocessError
from cvserve.preprocess.tensors import META

Ready = tuple[int, Any, Any]  # request index, its pixels, its META (torch)


class TritonPythonModel:
    """Input ``IMAGE`` uint8 (N, L) zero-padded bytes; outputs as the config declares them: the
    postprocess stage's, or without one the network's then META."""

    def initialize(self, args: dict[str, str]) -> None:
        params = stage_params(args, FusedParams)
        dnn, post = params.dnn, params.postprocess
        if dnn.model_file:
            dnn = replace(dnn, model_file=in_version_folder(args, dnn.model_file))
        spec = params.preprocess.spec
        batch = max(1, max_batch_size(args))
        self.device = instance_device(args) if spec.device == "gpu" else "cpu"
        options: dict[str, Any] = {}
        if self.device != "cpu" and params.preprocess.backend == "dali":
            options["device_id"] = int(self.device.partition(":")[2])
        self.input_name = input_names(args)[0]
        names = output_names(args)
        self.stage_times = STAGE_TIMES.name in names
        self.step_times = PREPROCESS_TIMES.name in names
        self.output_names = [n for n in names if n not in (STAGE_TIMES.name, PREPROCESS_TIMES.name)]
        if self.step_times:
            options["step_times"] = True  # DALI's steps apart (`preprocess.dali_steps`)
        self.dnn_outputs = list(params.dnn_outputs)
        self.preprocessor = make_preprocessor(
            spec, params.preprocess.backend, max_batch_size=batch,
            threads=params.preprocess.num_threads, **options,
        )  # fmt: skip
        self.run = load_chosen(
            dnn, self.dnn_outputs, spec.output_shape, batch, spec.dtype, device=self.device
        ).run
        self.postprocess = None
        if post is not None:
            if post.path:
                post = replace(post, path=in_version_folder(args, post.path))
            declared = config_tensors(json.loads(args["model_config"])["output"])
            outputs = [t for t in declared if t.name in self.output_names]  # not the times
            self.postprocess = Postprocessor(post, list(params.postprocess_inputs), outputs)

    def execute(self, requests: list[Any]) -> list[Any]:
        asked = self.stage_times and any(
            STAGE_TIMES.name in r.requested_output_names() for r in requests
        )
        times = PartTimes(self.device) if asked else PartTimes.off()
        # Encoded bytes stay on the host (DALI's `mixed` decoder takes them there).
        per_request = [input_tensor(r, self.input_name).cpu().numpy() for r in requests]
        batch = [image for images in per_request for image in images]
        step_ns = None
        if self.step_times:
            results, step_ns = self.preprocessor.timed(batch)
        else:
            results = self.preprocessor(batch)
        responses: list[Any] = [None] * len(requests)
        ready: list[Ready] = []
        start = 0
        for index, images in enumerate(per_request):
            mine = results[start : start + len(images)]
            start += len(images)
            try:
                pixels, meta = stack_results(mine)
            except PreprocessError as exc:  # INVALID_ARG: the client's dead letter, no retry
                responses[index] = exception_response(exc)
                continue
            ready.append((index, as_batch(pixels, self.device), torch.from_numpy(meta)))
        times.mark("preprocess")
        if ready:
            self._infer(ready, responses, times)
        settled(self.device)
        if asked or step_ns is not None:
            extra = {PREPROCESS_TIMES.name: step_ns}
            if asked:
                extra[STAGE_TIMES.name] = times.ns()
            responses = [
                with_times(r, extra, len(images))
                for r, images in zip(responses, per_request, strict=True)
            ]
        return responses

    def _infer(self, ready: list[Ready], responses: list[Any], times: PartTimes) -> None:
        """Run the DNN once on every preprocessed request, then their postprocessing (one call
        for all where the function allows it); fill their ``responses``; mark ``times`` as the
        DNN, the postprocessing and the answers' copy to the host end."""
        pixels = [p for _, p, _ in ready]
        try:
            outputs = self.run(torch.cat(pixels) if len(pixels) > 1 else pixels[0])
            times.mark("inference")
        except Exception as exc:
            for index, _, _ in ready:
                responses[index] = exception_response(exc)
            return
        by_name = dict(zip(self.dnn_outputs, outputs, strict=True))
        per_request, first = [], 0
        for _, batch, meta in ready:
            rows = slice(first, first + len(batch))
            first = rows.stop
            per_request.append({**{n: v[rows] for n, v in by_name.items()}, META: meta})
        if self.postprocess is not None:
            answered = postprocessed_responses(
                self.postprocess, per_request, self.output_names, times
            )
        else:  # the network's outputs and META are the answers
            answered = [
                pb_utils.InferenceResponse([output_tensor(n, v[n]) for n in self.output_names])
                for v in per_request
            ]
            times.mark("postprocess")  # Triton copies them to the host, in the hand-off
        for (index, _, _), response in zip(ready, answered, strict=True):
            responses[index] = response

    def finalize(self) -> None:
        self.preprocessor.close()
        self.run = None  # the network and its CUDA graphs go with it
        release(self.device)
