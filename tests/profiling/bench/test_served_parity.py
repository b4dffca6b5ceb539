"""Served answers compared by what they mean (`profiling.bench.served_parity`): the rules on
scripted answers, the same pipeline served as an ensemble and fused, and (on a GPU) the GPU's
answers against the CPU's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvserve.deploy.triton import TritonServer
from cvserve.pipelines.catalog import classify, image_pipeline
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling.bench.served_parity import compare, served_answers, served_parity

ARCH = "mobilenet_v3_small"  # small: the GPU test serves it twice


def labels(*top1: int) -> dict[str, np.ndarray]:
    return {"LABELS": np.array([[t, 0] for t in top1]), "SCORES": np.zeros((len(top1), 2))}


def test_classify_needs_every_top1_at_fp32_and_95_percent_at_reduced_precision() -> None:
    reference = [labels(*range(20))]
    one_off = [labels(*range(19), 99)]  # 19 of 20 = 0.95
    assert compare(reference, reference, reduced=False)["ok"]
    assert not compare(reference, one_off, reduced=False)["ok"]
    result = compare(reference, one_off, reduced=True)
    assert result["ok"] and result["worst"] == pytest.approx(0.95)
    assert not compare(reference, [labels(*range(18), 98, 99)], reduced=True)["ok"]


def detections(boxes: list[list[float]], classes: list[int]) -> dict[str, np.ndarray]:
    padded = np.zeros((1, 4, 4), np.float32)
    padded[0, : len(boxes)] = boxes
    names = np.zeros((1, 4), np.int64)
    names[0, : len(classes)] = classes
    return {"BOXES": padded, "LABELS": names, "COUNT": np.array([[len(boxes)]], np.int32)}


def test_detect_matches_every_box_of_the_same_class_at_iou_09() -> None:
    reference = [detections([[0, 0, 100, 100], [200, 200, 300, 260]], [1, 2])]
    shifted = [detections([[200, 201, 300, 261], [1, 1, 100, 100]], [2, 1])]  # order differs
    assert compare(reference, shifted, reduced=False)["ok"]
    moved = [detections([[0, 0, 100, 100], [200, 220, 300, 280]], [1, 2])]  # IoU 0.5
    assert compare(reference, moved, reduced=False)["worst"] == 0.5
    relabelled = [detections([[0, 0, 100, 100], [200, 200, 300, 260]], [1, 3])]
    assert not compare(reference, relabelled, reduced=False)["ok"]
    fewer = [detections([[0, 0, 100, 100]], [1])]
    assert not compare(reference, fewer, reduced=False)["ok"]


def test_masks_embeddings_and_depth_have_their_own_rules() -> None:
    mask = np.zeros((1, 10, 10), np.uint8)
    two_off = mask.copy()
    two_off[0, 0, :2] = 1  # 98 % equal
    assert compare([{"MASK": mask}], [{"MASK": mask}], reduced=False)["ok"]
    assert not compare([{"MASK": mask}], [{"MASK": two_off}], reduced=False)["ok"]
    e = np.array([[1.0, 0.0, 0.0]])
    assert compare([{"EMBEDDING": e}], [{"EMBEDDING": 2 * e}], reduced=False)["ok"]
    tilted = np.array([[1.0, 0.1, 0.0]])  # cosine 0.995
    assert not compare([{"EMBEDDING": e}], [{"EMBEDDING": tilted}], reduced=False)["ok"]
    depth = np.linspace(0, 1, 100, dtype=np.float32).reshape(1, 10, 10)
    assert compare([{"DEPTH": depth}], [{"DEPTH": depth + 0.005}], reduced=False)["ok"]
    assert not compare([{"DEPTH": depth}], [{"DEPTH": depth + 0.05}], reduced=False)["ok"]


@pytest.mark.server
def test_an_ensemble_and_its_fused_model_answer_alike_through_dlpack(
    triton: TritonServer, classify_spec: PipelineSpec, fused_specs: dict[str, PipelineSpec]
) -> None:
    images = [synthetic_image(320 + 16 * i, 240, seed=i) for i in range(4)]
    specs = [classify_spec, fused_specs["classify"]]
    answers = served_answers(specs, images, triton.grpc_url)
    apart, fused = answers[classify_spec.name], answers[fused_specs["classify"].name]
    assert compare(apart, fused, reduced=False)["ok"]
    for a, f in zip(apart, fused, strict=True):  # the same engine: the same scores
        np.testing.assert_allclose(a["SCORES"], f["SCORES"], rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.server
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("fused", [False, True], ids=["ensemble", "fused"])
def test_the_gpu_answers_as_the_cpu(fused: bool) -> None:
    images = [synthetic_image(640, 480, seed=i) for i in range(4)]

    def specs(device: str) -> list[PipelineSpec]:
        options = {"max_batch_size": 4, "device": device, "engine": "torch"}
        options["fuse_stages"] = fused and device == "gpu"
        detect = {"score_threshold": 0.5, "name": "detect_bright", **options}
        return [classify(ARCH, **options), image_pipeline("detect", "bright_region", **detect)]

    compared = served_parity({"cpu": specs("cpu"), "gpu": specs("gpu")}, images)
    assert set(compared) == {"classify", "detect_bright"}
    for results in compared.values():
        ((label, result),) = results.items()
        assert label == "gpu vs cpu" and result["ok"], result
