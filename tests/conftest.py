"""Shared fixtures: small specs, generated images, one real Triton for the server tests, one real
Kafka broker for the Kafka tests, and stage workers as processes."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from broker_testing import (
    HEARTBEAT_INTERVAL_MS,
    PIPELINE,
    SESSION_TIMEOUT_MS,
    WorkerUnderTest,
    worker_starter,
)
from served_models import write_slow_model

from cvserve.broker.worker_processes import worker_command
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.measurements import STORE_ENV
from cvserve.deploy.triton import TritonServer
from cvserve.models.fusion import fuse_stages
from cvserve.models.repository.local import write_repository
from cvserve.pipelines.catalog import classify, image_pipeline, preprocess_spec_for
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling.tritontrace import server_args

# Engine choices and tuned settings (`deploy.measurements`) go to this session's own folder: tests
# neither read what a developer's earlier runs stored nor leave anything behind there; Triton
# stubs and workers inherit the variable.
os.environ[STORE_ENV] = tempfile.mkdtemp(prefix="cvserve-test-measurements-")

# A small architecture keeps CPU inference fast in CI; the pipeline is otherwise the real one.
TEST_ARCH = "mobilenet_v3_small"

ECHO_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Returns every input unchanged, plus the NumPy version the stub runs with."""

    def execute(self, requests):
        responses = []
        for request in requests:
            tensors = []
            for name in ("U8", "F32", "F16", "I64", "BYTES"):
                array = pb_utils.get_input_tensor_by_name(request, "IN_" + name).as_numpy()
                tensors.append(pb_utils.Tensor("OUT_" + name, array))
            version = np.array([np.__version__.encode()], dtype=object)
            tensors.append(pb_utils.Tensor("NUMPY_VERSION", version))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
'''

ECHO_CONFIG = """
name: "echo"
backend: "python"
max_batch_size: 0
input [
  { name: "IN_U8" data_type: TYPE_UINT8 dims: [ -1 ] },
  { name: "IN_F32" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "IN_F16" data_type: TYPE_FP16 dims: [ -1 ] },
  { name: "IN_I64" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "IN_BYTES" data_type: TYPE_STRING dims: [ -1 ] }
]
output [
  { name: "OUT_U8" data_type: TYPE_UINT8 dims: [ -1 ] },
  { name: "OUT_F32" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "OUT_F16" data_type: TYPE_FP16 dims: [ -1 ] },
  { name: "OUT_I64" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "OUT_BYTES" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "NUMPY_VERSION" data_type: TYPE_STRING dims: [ 1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def write_echo_model(repository: Path) -> None:
    """A python-backend model that round-trips tensors of several dtypes (NumPy-2 canary)."""
    (repository / "echo" / "1").mkdir(parents=True, exist_ok=True)
    (repository / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    (repository / "echo" / "1" / "model.py").write_text(ECHO_MODEL)


@pytest.fixture(scope="session")
def classify_spec() -> PipelineSpec:
    return classify(TEST_ARCH, max_batch_size=8, top_k=5)


def small_input(arch: str, size: tuple[int, int]) -> dict[str, object]:
    """Pipeline options serving ``arch`` at a smaller input size (CPU time in CI)."""
    return {"preprocess": dataclasses.replace(preprocess_spec_for(arch), crop=size)}


@pytest.fixture(scope="session")
def task_specs() -> dict[str, PipelineSpec]:
    """One small pipeline per task, served beside classify by the session's Triton."""
    return {
        "segment": image_pipeline(
            "segment",
            "deeplabv3_mobilenet_v3_large",
            max_batch_size=4,
            **small_input("deeplabv3_mobilenet_v3_large", (128, 128)),
        ),
        # A real (random-weight) detector: a few boxes per image, so crops fan out over Kafka.
        "detect": image_pipeline(
            "detect",
            "ssdlite320_mobilenet_v3_large",
            max_batch_size=4,
            score_threshold=0.0,
            max_detections=3,
        ),
        # The fixed-head detector: boxes whose place in the original image is known.
        "detect_bright": image_pipeline(
            "detect", "bright_region", max_batch_size=4, score_threshold=0.5, name="detect_bright"
        ),
        "depth": image_pipeline(
            "depth", "depth_resnet18", max_batch_size=4, **small_input("depth_resnet18", (128, 128))
        ),
        "identify": image_pipeline(
            "identify",
            "embed_resnet18",
            max_batch_size=4,
            **small_input("embed_resnet18", (128, 64)),
        ),
    }


@pytest.fixture(scope="session")
def fused_specs() -> dict[str, PipelineSpec]:
    """Classify and the fixed-head detector (its postprocess reads META) with their stages
    fused into one model (`models.fusion`), under their own names."""
    return {
        "classify": fuse_stages(classify(TEST_ARCH, max_batch_size=8, name="fused_classify")),
        "detect_bright": fuse_stages(
            image_pipeline(
                "detect", "bright_region", max_batch_size=4, score_threshold=0.5,
                name="fused_detect_bright",
            )
        ),
    }  # fmt: skip


@pytest.fixture(scope="session")
def triton(
    classify_spec: PipelineSpec,
    task_specs: dict[str, PipelineSpec],
    fused_specs: dict[str, PipelineSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TritonServer]:
    """One real tritonserver for the whole suite: every pipeline above and the echo model."""
    workdir = tmp_path_factory.mktemp("triton")
    repository = write_repository(classify_spec, workdir / "repository")
    for spec in (*task_specs.values(), *fused_specs.values()):
        write_repository(spec, repository)
    write_echo_model(repository)
    write_slow_model(repository)
    # Traceable (tracing off until a profiler turns it on): the profiling tests share it.
    trace_file = workdir / "traces" / "trace.json"
    trace_file.parent.mkdir()
    server = TritonServer(
        repository, workdir=workdir / "server", extra_args=server_args(trace_file)
    )
    server.start(timeout_s=180)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sample_images() -> dict[str, bytes]:
    """Generated images of several sizes and formats, keyed ``<w>x<h>.<fmt>``."""
    cases = [
        (640, 480, "jpeg"),
        (300, 200, "jpeg"),
        (1024, 512, "png"),
        (257, 311, "png"),
        (1920, 1080, "jpeg"),
    ]
    return {
        f"{w}x{h}.{fmt}": synthetic_image(w, h, seed, fmt) for seed, (w, h, fmt) in enumerate(cases)
    }


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's real Kafka broker (KRaft, one node, loopback)."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), heap_mb=512)
    broker.start(timeout_s=120)
    yield broker
    broker.stop()


@pytest.fixture
def namespace() -> str:
    """A topic namespace of this test alone: its topics and groups start empty."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def start_worker(
    kafka: KafkaBroker, tmp_path: Path, namespace: str
) -> Iterator[Callable[..., WorkerUnderTest]]:
    """Start stage workers of ``classify`` in this test's namespace; killed (by pid) after it."""

    def command(triton_url: str, stats_path: Path, extra: Sequence[str]) -> list[str]:
        options = [
            "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
            "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
            "--batch-size", "4",
            *extra,
        ]  # fmt: skip
        return worker_command(
            kafka.bootstrap, namespace, PIPELINE, None, triton_url, stats_path, options
        )

    with worker_starter(command, tmp_path, "worker") as start:
        yield start


@pytest.fixture
def triton_url(triton: TritonServer) -> str:
    return triton.grpc_url
