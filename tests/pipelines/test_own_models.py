"""Serving other people's models from pipeline files on a real Triton: ONNX and TorchScript
classifiers, segmenters and embedders, a raw YOLO-style head with NMS, a user's postprocess
function (and one that raises), a model in the user's own Triton repository, and a composite of
two files across Kafka. Served answers equal the same models run in this process."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from broker_testing import fanned_out_results
from own_models import CLASSES, INPUT, OUTPUTS, classifier, write_models_and_files, yolo

from cvserve.broker.crops import cut_crops
from cvserve.broker.routes import composite_route
from cvserve.broker.schema import decode_outputs
from cvserve.broker.worker_processes import StageWorkerProcesses
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.triton import TritonServer
from cvserve.models.client import InferenceError, PipelineClient
from cvserve.models.local_pipeline import LocalPipeline
from cvserve.models.params import DnnParams
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.catalog import file_specs
from cvserve.pipelines.spec import CompositeSpec, PipelineSpec
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.geometry import to_original
from cvserve.preprocess.spec import PreprocessParams
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.preprocess.tensors import BOXES, COUNT, EMBEDDING, LABELS, MASK, SCORES
from cvserve.profiling.load import closed_loop, image_senders
from cvserve.profiling.sweep import serve_traced

pytestmark = pytest.mark.server

SINGLE = (
    "cls_onnx",
    "cls_ts",
    "seg_onnx",
    "seg_ts",
    "seg_dynamic",
    "emb_onnx",
    "emb_ts",
    "yolo_onnx",
    "user_fn",
    "user_fn_broken",
    "brightness",
    "arch_openvino",
)
# JPEG and PNG, landscape and portrait, down- and upscaled.
IMAGES = (
    synthetic_image(320, 240, 1, "jpeg"),
    synthetic_image(150, 260, 2, "png"),
    synthetic_image(64, 48, 3, "jpeg"),
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_models_and_files(tmp_path_factory.mktemp("own-models"))


@pytest.fixture(scope="module")
def specs(files: dict[str, Path]) -> dict[str, PipelineSpec]:
    found = {name: file_specs(files[name])[1][0] for name in SINGLE}
    composite, parts = file_specs(files["yolo_embed"])
    found.update({p.name: p for p in parts})
    return found


@pytest.fixture(scope="module")
def composite(files: dict[str, Path]) -> CompositeSpec:
    composite, _ = file_specs(files["yolo_embed"])
    assert composite is not None
    return composite


@pytest.fixture(scope="module")
def server(
    specs: dict[str, PipelineSpec], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    # Traceable, so that the profiler profiles it as it runs rather than starting a third Triton
    # beside this one and the session's (memory: about 330 MB per python-backend stub).
    with serve_traced(list(specs.values()), tmp_path_factory.mktemp("own-triton")) as triton:
        yield triton


def served(server: TritonServer, spec: PipelineSpec, image: bytes) -> dict[str, np.ndarray]:
    with PipelineClient(server.grpc_url, spec) as client:
        return client.infer([image])


def pixels_and_meta(spec: PipelineSpec, image: bytes) -> tuple[np.ndarray, np.ndarray]:
    pre = spec.stage_by_role("preprocess").params_as(PreprocessParams).spec
    with DaliPreprocessor(pre, max_batch_size=1, num_threads=1) as dali:
        return dali.run_batch_with_meta([image])


@pytest.mark.parametrize(
    "name",
    ["cls_onnx", "cls_ts", "seg_onnx", "seg_ts", "seg_dynamic", "emb_onnx", "emb_ts", "yolo_onnx"],
)
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


def test_a_user_postprocess_function_is_called_and_its_outputs_served(
    server: TritonServer, specs: dict[str, PipelineSpec]
) -> None:
    for image in IMAGES:
        got = served(server, specs["user_fn"], image)
        logits = served(server, specs["cls_onnx"], image)
        assert got["best"][0, 0] == 100 + logits[LABELS][0, 0]  # the file's offset option
        pixels, meta = pixels_and_meta(specs["user_fn"], image)
        assert got["width"][0, 0] == meta[0, 1]


def test_a_raising_user_function_answers_an_error_and_the_server_keeps_serving(
    server: TritonServer, specs: dict[str, PipelineSpec]
) -> None:
    for _ in range(2):
        with pytest.raises(InferenceError, match="failed on purpose"):
            served(server, specs["user_fn_broken"], IMAGES[0])
        assert "best" in served(server, specs["user_fn"], IMAGES[0])
    assert server.process is not None and server.process.poll() is None


def test_a_model_of_the_users_repository_is_served_by_its_own_backend(
    server: TritonServer, specs: dict[str, PipelineSpec]
) -> None:
    spec = specs["brightness"]
    assert spec.stage_by_role("inference").name == "brightness"  # the user's model, not ours
    for image in IMAGES:
        pixels, _ = pixels_and_meta(spec, image)
        got = served(server, spec, image)
        np.testing.assert_allclose(got["mean_rgb"], pixels.mean(axis=(2, 3)), atol=1e-5)


@pytest.mark.kafka
def test_a_composite_of_two_files_runs_across_kafka_every_crop_tied_to_its_request(
    server: TritonServer,
    specs: dict[str, PipelineSpec],
    composite: CompositeSpec,
    files: dict[str, Path],
    kafka: KafkaBroker,
    namespace: str,
    tmp_path: Path,
) -> None:
    route = composite_route(composite)
    workers = StageWorkerProcesses(
        kafka.bootstrap,
        route,
        server.grpc_url,
        namespace,
        tmp_path / "workers",
        extra_args=("--file", str(files["yolo_embed"])),
    )
    images = list(IMAGES)
    with workers:
        workers.wait_running()
        ids, results = fanned_out_results(kafka.bootstrap, route, namespace, images)
    embed = PipelineClient(server.grpc_url, specs["embed_stage"])
    total = 0
    for request_id, image in zip(ids, images, strict=True):
        (detection,) = [m for m in results[request_id] if m.crop is None]
        found = decode_outputs(detection.value)
        count = int(found[COUNT].reshape(-1)[0])
        expected = cut_crops(image, found[BOXES][:count], found[SCORES][:count], 0.25, 4)
        crops = sorted((m for m in results[request_id] if m.crop), key=lambda m: m.crop.index)
        assert [m.crop.box for m in crops] == [c.crop.box for c in expected]
        for message, crop in zip(crops, expected, strict=True):
            assert message.request_id == request_id
            direct = embed.infer([crop.jpeg])[EMBEDDING][0]
            np.testing.assert_allclose(
                decode_outputs(message.value)[EMBEDDING].reshape(-1), direct, atol=1e-5
            )
        total += len(crops)
    embed.close()
    assert total > len(images)  # the detector's boxes fanned out


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


def test_an_architecture_served_on_openvino_agrees_with_torch_eager(
    server: TritonServer, specs: dict[str, PipelineSpec]
) -> None:
    spec = specs["arch_openvino"]
    dnn = spec.stage_by_role("inference")
    assert dnn.params_as(DnnParams).engine == "openvino"
    eager = dataclasses.replace(dnn, params=dataclasses.replace(dnn.params, engine=None))
    local = LocalPipeline(
        dataclasses.replace(spec, stages=tuple(eager if s is dnn else s for s in spec.stages))
    )
    for image in IMAGES:
        got, want = served(server, spec, image), local([image])
        np.testing.assert_array_equal(got[LABELS], want[LABELS])
        np.testing.assert_allclose(got[SCORES], want[SCORES], atol=1e-4)
