"""Run a `PipelineSpec` in this process, without Triton: the same preprocessing backend, the same
network (`models.runners`) and the same postprocessor the served ensemble uses, on the stages'
devices (a GPU stage on ``cuda:0``). The reference every served answer is compared with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cvserve.models.engine_choice import load_chosen, stage_device
from cvserve.models.params import DnnParams, PostprocessParams
from cvserve.models.postprocessor import Postprocessor
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import unfused
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.spec import PreprocessParams


class LocalPipeline:
    """``LocalPipeline(spec)(images)`` → the ensemble's outputs by name, batch first, as NumPy
    arrays on the host."""

    def __init__(self, spec: PipelineSpec, threads: int = 1) -> None:
        self.spec = spec
        spec = unfused(spec)  # in process, the same stages one after the other
        pre = spec.stage_by_role("preprocess")
        dnn = spec.stage_by_role("inference")
        self.preprocessor = DaliPreprocessor(
            pre.params_as(PreprocessParams).spec,
            max_batch_size=pre.batching.max_batch_size,
            num_threads=threads,
        )
        self.pixels_name, *rest = (t.name for t in pre.outputs)
        self.meta_name = rest[0] if rest else None
        self.dnn_outputs = [t.name for t in dnn.outputs]
        self.device = stage_device(dnn)
        (pixels,) = dnn.inputs
        self.run = load_chosen(
            dnn.params_as(DnnParams),
            self.dnn_outputs,
            pixels.dims,
            dnn.batching.max_batch_size,
            str(pixels.numpy_dtype),
            set_threads=False,
            device=self.device,
        ).run
        post = next((s for s in spec.stages if s.role == "postprocess"), None)
        self.postprocess = (
            Postprocessor(
                post.params_as(PostprocessParams), [t.name for t in post.inputs], post.outputs
            )
            if post
            else None
        )

    def __call__(self, images: Sequence[bytes]) -> dict[str, np.ndarray]:
        pixels, meta = self.preprocessor.run_batch_with_meta(images)
        tensors = dict(zip(self.dnn_outputs, self.run(pixels), strict=True))
        if self.postprocess is not None:
            if self.meta_name:
                tensors[self.meta_name] = torch.from_numpy(meta.astype(np.float32))
            tensors = self.postprocess(tensors)
        # Raw (no postprocessing): the network's outputs are the pipeline's.
        return {t.name: tensors[t.name].numpy(force=True) for t in self.spec.outputs}
