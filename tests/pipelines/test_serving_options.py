"""Serving defaults, answer summaries, and DALI output buffers that outlive the next batch."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cvserve.deploy.host import usable_cores
from cvserve.models.repository.config import read_config
from cvserve.models.repository.local import write_repository
from cvserve.pipelines.app.summary import summarize, write_pngs
from cvserve.pipelines.catalog import classify
from cvserve.pipelines.defaults import serving_defaults
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.spec import PreprocessParams, PreprocessSpec
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.preprocess.tensors import BOXES, COUNT, DEPTH, LABELS, MASK, SCORES, SIZE


def test_cpu_defaults_use_every_core_in_one_instance_and_never_wait_for_a_batch() -> None:
    cpu = serving_defaults("cpu", cores=16)
    assert (cpu.instances, cpu.dali_threads, cpu.torch_threads) == (1, 16, 16)
    # At one request in flight no batch can form: a CPU stage does not wait for one.
    assert cpu.max_queue_delay_us == 0
    gpu = serving_defaults("gpu", cores=16)
    assert gpu.instances == 2 and gpu.torch_threads == 1 and gpu.max_batch_size >= 32
    assert gpu.max_queue_delay_us > 0 and gpu.preferred_batch_sizes


def test_repository_uses_the_machine_defaults_unless_overridden(tmp_path: Path) -> None:
    cores = usable_cores()
    # The split is not guessed from the network's size (`cvserve tune` measures it).
    for arch, (dali, torch) in {
        "resnet50": (cores, cores),
        "mobilenet_v3_small": (cores, cores),
    }.items():
        write_repository(classify(arch), tmp_path / arch)
        dnn = read_config(tmp_path / arch / "classify_dnn" / "config.pbtxt")
        assert f'"torch_threads": {torch}' in dnn.parameters["cvserve_stage"].string_value
        assert dnn.max_batch_size == serving_defaults("cpu", cores).max_batch_size
        pre = read_config(tmp_path / arch / "classify_preprocess" / "config.pbtxt")
        assert f'"num_threads": {dali}' in pre.parameters["cvserve_stage"].string_value
    write_repository(classify("mobilenet_v3_small", torch_threads=1, instances=3), tmp_path / "b")
    dnn = read_config(tmp_path / "b" / "classify_dnn" / "config.pbtxt")
    assert '"torch_threads": 1' in dnn.parameters["cvserve_stage"].string_value
    assert dnn.instance_group[0].count == 3


def test_gpu_pipeline_preprocesses_on_the_gpu() -> None:
    spec = classify(device="gpu")
    assert spec.stage_by_role("preprocess").params_as(PreprocessParams).spec.device == "gpu"
    assert spec.stage_by_role("inference").batching.preferred_batch_sizes


def test_dali_outputs_are_not_overwritten_by_the_next_batch() -> None:
    """DALI reuses its buffers between runs: what it returned must be ours to keep."""
    dali = DaliPreprocessor(PreprocessSpec(), max_batch_size=2, num_threads=1)
    first = dali.run_batch([synthetic_image(320, 240, seed=1), synthetic_image(320, 240, seed=2)])
    kept = first.copy()
    dali.run_batch([synthetic_image(640, 480, seed=3), synthetic_image(640, 480, seed=4)])
    np.testing.assert_array_equal(first, kept)


def test_summaries_read_like_answers(tmp_path: Path) -> None:
    names = ["bg", "cat", "dog"]
    detections = {
        BOXES: np.array([[[1, 2, 30, 40], [0, 0, 0, 0]]], np.float32),
        SCORES: np.array([[0.9, 0]], np.float32),
        LABELS: np.array([[2, 0]], np.int64),
        COUNT: np.array([[1]], np.int32),
    }
    assert summarize(detections, 0, names) == "1 detection(s): dog 0.90 [1, 2, 30, 40]"
    mask = np.full((1, 4, 6), 255, np.uint8)
    mask[0, :2, :3] = 1
    mask[0, :2, 3:] = 0
    segmentation = {MASK: mask, SIZE: np.array([[2, 6]], np.int32)}
    assert summarize(segmentation, 0, names) == "mask 6x2: bg 50%, cat 50%"
    image = tmp_path / "photo.jpg"
    (path,) = write_pngs(segmentation, 0, image)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (2, 6)
    depth = {
        DEPTH: np.linspace(0, 1, 12, dtype=np.float16).reshape(1, 3, 4),
        SIZE: np.array([[3, 4]], np.int32),
    }
    (path,) = write_pngs(depth, 0, image)
    written = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.max() == 65535 and written.min() == 0
