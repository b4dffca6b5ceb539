"""Triton adapter of a fused stage (`models.fusion`): encoded images → preprocessing → the DNN
→ postprocessing, in one stub. Per request the same as the stages' adapters chained: a request
whose image cannot be preprocessed, or whose postprocessing raises, gets that error; the rest of
the batch is answered, the DNN running once on every preprocessed request together."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from cvserve.models.engine_choice import load_chosen
from cvserve.models.params import FusedParams
from cvserve.models.postprocessor import Postprocessor
from cvserve.models.repository.config import config_tensors
from cvserve.models.triton.base import (
    error_response,
    in_version_folder,
    input_names,
    max_batch_size,
    output_names,
    stage_params,
)
from cvserve.preprocess.backends import make_preprocessor
from cvserve.preprocess.preprocessor import stack_results
from cvserve.preprocess.spec import PreprocessError
from cvserve.preprocess.tensors import META

Ready = tuple[int, np.ndarray, np.ndarray]  # request index, its pixels, its META


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
        self.input_name = input_names(args)[0]
        self.output_names = output_names(args)
        self.dnn_outputs = list(params.dnn_outputs)
        self.preprocessor = make_preprocessor(
            spec, params.preprocess.backend, max_batch_size=batch,
            threads=params.preprocess.num_threads,
        )  # fmt: skip
        self.run = load_chosen(dnn, self.dnn_outputs, spec.output_shape, batch, spec.dtype).run
        self.postprocess = None
        if post is not None:
            if post.path:
                post = replace(post, path=in_version_folder(args, post.path))
            outputs = config_tensors(json.loads(args["model_config"])["output"])
            self.postprocess = Postprocessor(post, list(params.postprocess_inputs), outputs)

    def execute(self, requests: list[Any]) -> list[Any]:
        per_request = [
            pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests
        ]
        results = self.preprocessor([image for images in per_request for image in images])
        responses: list[Any] = [None] * len(requests)
        ready: list[Ready] = []
        start = 0
        for index, images in enumerate(per_request):
            mine = results[start : start + len(images)]
            start += len(images)
            try:
                pixels, meta = stack_results(mine)
            except PreprocessError as exc:
                responses[index] = error_response(exc.wire())
                continue
            ready.append((index, pixels, meta))
        if ready:
            self._infer(ready, responses)
        return responses

    def _infer(self, ready: list[Ready], responses: list[Any]) -> None:
        """Run the DNN once on every preprocessed request, then each request's postprocessing;
        fill their ``responses``."""
        pixels = [p for _, p, _ in ready]
        try:
            outputs = self.run(np.concatenate(pixels) if len(pixels) > 1 else pixels[0])
        except Exception as exc:
            for index, _, _ in ready:
                responses[index] = error_response(f"{type(exc).__name__}: {exc}")
            return
        by_name = dict(zip(self.dnn_outputs, outputs, strict=True))
        first = 0
        for index, batch, meta in ready:
            rows = slice(first, first + len(batch))
            first += len(batch)
            values = {n: np.ascontiguousarray(v[rows]) for n, v in by_name.items()}
            values[META] = meta
            try:
                if self.postprocess is not None:
                    values = self.postprocess(values)
            except Exception as exc:
                responses[index] = error_response(f"{type(exc).__name__}: {exc}")
                continue
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(values[n])) for n in self.output_names
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        self.preprocessor.close()
