"""``cvserve profile --triton-url … --model …`` on models cvserve did not build: a plain ensemble
written by hand (an encoded-image input) and a tensor model, served by a real Triton."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from cvserve.deploy.triton import TritonServer
from cvserve.pipelines.app.cli import main
from cvserve.profiling import tritonstats

pytestmark = pytest.mark.server

MEASURE = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "encoded").as_numpy()
            size = np.array([[float((row != 0).sum())] for row in data], np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("size", size)]))
        return out
"""
DOUBLE = (
    MEASURE.replace('"encoded"', '"size"')
    .replace("np.array([[float((row != 0).sum())] for row in data], np.float32)", "data * 2")
    .replace('Tensor("size"', 'Tensor("doubled"')
)
TOTAL = (
    MEASURE.replace('"encoded"', '"x"')
    .replace(
        "np.array([[float((row != 0).sum())] for row in data], np.float32)",
        "data.reshape(len(data), -1).sum(axis=1, keepdims=True)",
    )
    .replace('Tensor("size"', 'Tensor("total"')
)


def python_model(root: Path, name: str, code: str, inputs: str, outputs: str) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "1" / "model.py").write_text(code)
    (root / name / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 4\n{inputs}\n{outputs}\n'
        "dynamic_batching { max_queue_delay_microseconds: 1000 }\n"
        "instance_group { count: 1 kind: KIND_CPU }\n"
    )


def hand_built_repository(root: Path) -> Path:
    python_model(
        root,
        "measure",
        MEASURE,
        'input { name: "encoded" data_type: TYPE_UINT8 dims: [-1] allow_ragged_batch: true }',
        'output { name: "size" data_type: TYPE_FP32 dims: [1] }',
    )
    python_model(
        root,
        "double",
        DOUBLE,
        'input { name: "size" data_type: TYPE_FP32 dims: [1] }',
        'output { name: "doubled" data_type: TYPE_FP32 dims: [1] }',
    )
    python_model(
        root,
        "total",
        TOTAL,
        'input { name: "x" data_type: TYPE_FP32 dims: [4, -1] }',
        'output { name: "total" data_type: TYPE_FP32 dims: [1] }',
    )
    (root / "hand_ensemble" / "1").mkdir(parents=True)
    (root / "hand_ensemble" / "config.pbtxt").write_text(
        textwrap.dedent(
            """\
            name: "hand_ensemble"
            platform: "ensemble"
            max_batch_size: 4
            input { name: "IMAGE_BYTES" data_type: TYPE_UINT8 dims: [-1] }
            output { name: "DOUBLED" data_type: TYPE_FP32 dims: [1] }
            ensemble_scheduling {
              step { model_name: "measure" model_version: -1
                     input_map { key: "encoded" value: "IMAGE_BYTES" }
                     output_map { key: "size" value: "measured" } }
              step { model_name: "double" model_version: -1
                     input_map { key: "size" value: "measured" }
                     output_map { key: "doubled" value: "DOUBLED" } }
            }
            """
        )
    )
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("hand-built")
    repository = hand_built_repository(root / "repository")
    with TritonServer(repository, workdir=root / "triton") as triton:
        yield triton


def run_profile(server: TritonServer, model: str, out: Path, sizes: str) -> dict:
    argv = ["profile", "--triton-url", server.grpc_url, "--model", model, "--sizes", sizes]
    argv += ["--concurrency", "1,3", "--duration", "1", "--out", str(out)]
    assert main(argv) == 0
    (folder,) = out.iterdir()
    assert (folder / "split.csv").is_file() and (folder / "summary.txt").is_file()
    return json.loads((folder / "summary.json").read_text())


def test_a_hand_built_ensemble_is_profiled_per_composing_model_as_the_statistics_api_counts(
    server: TritonServer, tmp_path: Path
) -> None:
    models = ["measure", "double", "hand_ensemble"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = tritonstats.fetch_settled(client, models)
    summary = run_profile(server, "hand_ensemble", tmp_path, "160x120,320x240")
    after = tritonstats.fetch_settled(client, models)
    client.close()
    assert summary["composing_models"] == ["measure", "double"]
    assert summary["inputs"] == [
        {"name": "IMAGE_BYTES", "datatype": "UINT8", "shape": [-1], "image": True}
    ]
    assert "statistics API" in summary["split_source"]
    points = summary["points"]
    assert [p["label"] for p in points] == [
        "160x120 c=1", "160x120 c=3", "320x240 c=1", "320x240 c=3"
    ]  # fmt: skip
    warm_up = 2 * 2  # two unmeasured requests per size
    for model in models:
        for point in points:
            split = point["models"][model]
            # Every request of the point passed through every model, once.
            assert split["requests"] == point["requests"] > 0 and point["errors"] == 0
        total = sum(p["models"][model]["requests"] for p in points)
        assert total + warm_up == after[model].requests - before[model].requests
        for phase in tritonstats.PHASES:
            measured = sum(p["models"][model]["ns"][phase] for p in points)
            assert measured <= after[model].ns[phase] - before[model].ns[phase]
    infer = [p["models"]["measure"]["ns"]["compute_infer"] for p in points]
    assert all(ns > 0 for ns in infer)


def test_a_tensor_model_gets_generated_tensors_of_its_declared_shape(
    server: TritonServer, tmp_path: Path
) -> None:
    summary = run_profile(server, "total", tmp_path, "160x120")
    assert summary["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [4, -1], "image": False}
    ]
    assert [p["label"] for p in summary["points"]] == ["tensors c=1", "tensors c=3"]
    assert all(p["requests"] > 0 and p["errors"] == 0 for p in summary["points"])


def test_a_model_the_server_does_not_serve_is_one_line_and_exit_2(
    server: TritonServer, tmp_path: Path
) -> None:
    argv = ["profile", "--triton-url", server.grpc_url, "--model", "nope", "--out", str(tmp_path)]
    assert main(argv) == 2
