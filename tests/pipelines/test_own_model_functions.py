"""Serving what users bring beyond an exported network, from pipeline files on a real Triton:
a user's postprocess function (and one that raises), a model in the user's own Triton
repository, an architecture on OpenVINO, and a composite of two files across Kafka. Served
answers equal the same models run in this process."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from broker_testing import fanned_out_results
from own_model_serving import IMAGES, pixels_and_meta, served

from cvserve.broker.crops import cut_crops
from cvserve.broker.routes import composite_route
from cvserve.broker.schema import decode_outputs
from cvserve.broker.worker_processes import StageWorkerProcesses
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.triton import TritonServer
from cvserve.models.client import InferenceError, PipelineClient
from cvserve.models.local_pipeline import LocalPipeline
from cvserve.models.params import DnnParams
from cvserve.models.serving import serve_locally
from cvserve.pipelines.spec import CompositeSpec, PipelineSpec
from cvserve.preprocess.tensors import BOXES, COUNT, EMBEDDING, LABELS, SCORES

pytestmark = pytest.mark.server

# What this module's tests call, besides the composite's parts (the exported networks are
# served by test_own_models.py).
SERVED = ("user_fn", "user_fn_broken", "cls_onnx", "brightness", "arch_openvino")


@pytest.fixture(scope="module")
def server(
    specs: dict[str, PipelineSpec],
    composite: CompositeSpec,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TritonServer]:
    served_specs = [specs[name] for name in (*SERVED, *composite.parts)]
    with serve_locally(served_specs, tmp_path_factory.mktemp("own-fn-triton")) as triton:
        yield triton


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
