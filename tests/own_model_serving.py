"""Serving the models "a user brings" (`own_models`) in tests: the images they are sent, one
served call, and the preprocessing a served pipeline does, run in this process."""

from __future__ import annotations

import numpy as np

from cvserve.deploy.triton import TritonServer
from cvserve.models.client import PipelineClient
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.spec import PreprocessParams
from cvserve.preprocess.synthetic import synthetic_image

# The pipeline files `own_models.write_models_and_files` writes, one pipeline each: the exported
# networks, then what users bring beyond one (their functions, their backend, OpenVINO).
EXPORTED = (
    "cls_onnx",
    "cls_ts",
    "seg_onnx",
    "seg_ts",
    "seg_dynamic",
    "emb_onnx",
    "emb_ts",
    "yolo_onnx",
)
SINGLE = (*EXPORTED, "user_fn", "user_fn_broken", "brightness", "arch_openvino")

# JPEG and PNG, landscape and portrait, down- and upscaled.
IMAGES = (
    synthetic_image(320, 240, 1, "jpeg"),
    synthetic_image(150, 260, 2, "png"),
    synthetic_image(64, 48, 3, "jpeg"),
)


def served(server: TritonServer, spec: PipelineSpec, image: bytes) -> dict[str, np.ndarray]:
    with PipelineClient(server.grpc_url, spec) as client:
        return client.infer([image])


def pixels_and_meta(spec: PipelineSpec, image: bytes) -> tuple[np.ndarray, np.ndarray]:
    pre = spec.stage_by_role("preprocess").params_as(PreprocessParams).spec
    with DaliPreprocessor(pre, max_batch_size=1, num_threads=1) as dali:
        return dali.run_batch_with_meta([image])
