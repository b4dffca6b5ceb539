"""Run a `PipelineSpec` in this process, without Triton: the same preprocessing backend, the same
seeded module and the same postprocess function the served ensemble uses. The reference every
served answer is compared with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cvserve.models.params import DnnParams, PostprocessParams
from cvserve.models.postprocess import FUNCTIONS
from cvserve.models.zoo import build_dnn
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.spec import PreprocessParams


class LocalPipeline:
    """``LocalPipeline(spec)(images)`` → the ensemble's outputs by name, batch first."""

    def __init__(self, spec: PipelineSpec, threads: int = 1) -> None:
        self.spec = spec
        pre = spec.stage_by_role("preprocess")
        dnn = spec.stage_by_role("inference")
        post = spec.stage_by_role("postprocess")
        post_params = post.params_as(PostprocessParams)
        self.preprocessor = DaliPreprocessor(
            pre.params_as(PreprocessParams).spec,
            max_batch_size=pre.batching.max_batch_size,
            num_threads=threads,
        )
        self.model = build_dnn(dnn.params_as(DnnParams))
        self.dnn_outputs = [t.name for t in dnn.outputs]
        self.post_inputs = [t.name for t in post.inputs]
        self.post_outputs = [t.name for t in post.outputs]
        self.function = FUNCTIONS[post_params.function]
        self.options = post_params.options()
        self.meta_name = pre.outputs[1].name if len(pre.outputs) > 1 else None

    def __call__(self, images: Sequence[bytes]) -> dict[str, np.ndarray]:
        pixels, meta = self.preprocessor.run_batch_with_meta(images)
        with torch.inference_mode():
            raw = self.model(torch.as_tensor(pixels).float())
        raw = raw if isinstance(raw, tuple) else (raw,)
        tensors: dict[str, Any] = {n: r.numpy() for n, r in zip(self.dnn_outputs, raw, strict=True)}
        if self.meta_name:
            tensors[self.meta_name] = meta.astype(np.float32)
        results = self.function(*(tensors[n] for n in self.post_inputs), **self.options)
        return dict(zip(self.post_outputs, results, strict=True))
