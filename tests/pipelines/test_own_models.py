"""Serving other people's models from pipeline files on a real Triton: ONNX and TorchScript
classifiers, segmenters and embedders, and a raw YOLO-style head with NMS; `cvserve infer` and
`cvserve profile` on them. Served answers equal the same models run in this process (user
functions, the user's own backend and a composite: test_own_model_functions.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from own_model_serving import EXPORTED, IMAGES, pixels_and_meta, served
from own_models import CLASSES, INPUT, OUTPUTS, classifier, yolo

from cvserve.deploy.triton import TritonServer
from cvserve.models.local_pipeline import LocalPipeline
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.geometry import to_original
from cvserve.preprocess.tensors import BOXES, COUNT, EMBEDDING, LABELS, MASK, SCORES
from cvserve.profiling.load import closed_loop, image_senders
from cvserve.profiling.sweep import serve_traced

pytestmark = pytest.mark.server

# What this module's tests call (the rest is served by test_own_model_functions.py).
SERVED = EXPORTED


@pytest.fixture(scope="module")
def server(
    specs: dict[str, PipelineSpec], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    # Traceable, so that the profiler profiles it as it runs rather than starting another
    # Triton beside this one and the session's.
    served_specs = [specs[name] for name in SERVED]
    with serve_traced(served_specs, tmp_path_factory.mktemp("own-triton")) as triton:
        yield triton


@pytest.mark.parametrize("name", SERVED)
def test_served_answers_equal_the_same_pipeline_in_process(
    name: str, server: TritonServer, specs: dict[str, PipelineSpec]
) -> None:
    spec = specs[name]
    local = LocalPipeline(spec)
    for image in IMAGES:
        got, want = served(server, spec, image), local([image])
        assert set(got) == set(want) == {t.name for t in spec.outputs}
        for key, value in want.items():
            if value.dtype.kind in "iu" and key != COUNT:
                np.testing.assert_array_equal(got[key], value, err_msg=f"{name} {key}")
            else:
                np.testing.assert_allclose(got[key], value, atol=1e-4, err_msg=f"{name} {key}")
    if name.startswith("emb"):
        np.testing.assert_allclose(np.linalg.norm(got[EMBEDDING], axis=1), 1.0, atol=1e-5)
    if name.startswith("seg"):
        assert got[MASK].max() < CLASSES


def test_a_dynamic_input_follows_each_image_and_its_mask_comes_back_at_its_size(
    server: TritonServer, specs: dict[str, PipelineSpec]
) -> None:
    spec = specs["seg_dynamic"]
    assert spec.stage_by_role("inference").inputs[0].dims == (3, -1, -1)
    sizes = []
    for image in IMAGES:
        pixels, meta = pixels_and_meta(spec, image)
        sizes.append(pixels.shape[2:])
        got = served(server, spec, image)
        orig_h, orig_w = (int(v) for v in meta[0][:2])
        assert got[MASK].shape[1:] == (orig_h, orig_w)
    # 320x240 fits 128 as 128x96; 150x260 as 74x128 → 96x128; 64x48 keeps its size → 64x64.
    assert sizes == [(96, 128), (128, 96), (64, 64)]
    # Requests of different sizes in flight together: Triton batches only equal shapes.
    load = closed_loop(image_senders(server.grpc_url, spec, IMAGES), 4, requests_per_client=6)
    assert load.errors == 0 and load.requests == 24


@pytest.mark.parametrize("name", ["cls_onnx", "cls_ts"])
def test_served_classifier_equals_torch_eager_softmax_top_k(
    name: str, server: TritonServer, specs: dict[str, PipelineSpec]
) -> None:
    """An independent reference: the torchvision module itself, softmax in torch."""
    spec = specs[name]
    model = classifier()
    for image in IMAGES:
        pixels, _ = pixels_and_meta(spec, image)
        with torch.no_grad():
            probabilities = torch.softmax(model(torch.from_numpy(pixels)), dim=1)
        scores, labels = probabilities.topk(3, dim=1)
        got = served(server, spec, image)
        np.testing.assert_array_equal(got[LABELS], labels.numpy())
        np.testing.assert_allclose(got[SCORES], scores.numpy(), atol=1e-5)


def test_served_yolo_detections_equal_torchvision_nms_in_process(
    server: TritonServer, specs: dict[str, PipelineSpec]
) -> None:
    """Reference: the eager head, boxes cx,cy,w,h → corners, torchvision's batched_nms, mapped
    to original pixels with META and clipped; the served boxes are the same, best first."""
    spec = specs["yolo_onnx"]
    model = yolo()
    suppressed = 0
    for image in IMAGES:
        pixels, meta = pixels_and_meta(spec, image)
        with torch.no_grad():
            head = model(torch.from_numpy(pixels))[0].T  # (A, 4 + C)
        scores, labels = head[:, 4:].max(dim=1)
        keep = scores >= 0.25
        cx, cy, w, h = head[keep, :4].T
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1).double()
        kept = torchvision.ops.batched_nms(boxes, scores[keep].double(), labels[keep], 0.5)[:10]
        suppressed += int(keep.sum()) - len(kept)
        expected = to_original(boxes[kept].numpy(), meta[0])
        orig_h, orig_w = meta[0][:2]
        expected[:, 0::2] = expected[:, 0::2].clip(0, orig_w)
        expected[:, 1::2] = expected[:, 1::2].clip(0, orig_h)
        got = served(server, spec, image)
        count = int(got[COUNT][0, 0])
        assert count == len(kept) > 0
        np.testing.assert_allclose(got[BOXES][0, :count], expected, atol=1e-3)
        np.testing.assert_allclose(got[SCORES][0, :count], scores[keep][kept].numpy(), atol=1e-5)
        np.testing.assert_array_equal(got[LABELS][0, :count], labels[keep][kept].numpy())
    assert suppressed > 0  # NMS did remove overlapping boxes


def test_tensor_names_of_other_exporters_are_served_as_they_are(
    specs: dict[str, PipelineSpec],
) -> None:
    dnn = specs["cls_onnx"].stage_by_role("inference")
    assert [t.name for t in dnn.inputs] == [INPUT]
    assert [t.name for t in dnn.outputs] == [OUTPUTS["classifier"]]
    post = specs["user_fn"].stage_by_role("postprocess")
    assert [t.name for t in post.inputs] == [OUTPUTS["classifier"], "META"]


def test_infer_with_a_file_prints_the_files_labels(
    server: TritonServer,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(IMAGES[0])
    argv = ["infer", "--file", str(files["cls_onnx"]), "--url", server.grpc_url, str(image)]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: label") and line.count("label") == 3  # top 3, named


def test_profile_with_a_file_writes_a_run_folder_with_the_split(
    server: TritonServer, files: dict[str, Path], tmp_path: Path
) -> None:
    argv = ["profile", "--file", str(files["emb_onnx"]), "--preprocess", "server-cpu"]
    argv += ["--triton-url", server.grpc_url]
    argv += ["--sizes", "160x120", "--concurrency", "1", "--duration", "0.5"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    (point,) = summary["points"]
    assert point["requests"] > 0 and point["errors"] == 0
    assert point["triton_traced"] == point["requests"]  # every request traced in Triton
    assert {"emb_onnx_preprocess", "emb_onnx_dnn"} <= set(point["triton_vs_stats"])
