"""A fused pipeline profiled as it is served: its model's `STAGE_TIMES` on a real tritonserver,
and `cvserve profile` splitting the fused model's compute into preprocessing, the DNN and
postprocessing — against a running server and serving it itself; the same stages apart each
report their own work, and what Triton spends around it is the hand-off (data movement)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cvserve.deploy.kafka import KafkaBroker
from cvserve.models.client import PipelineClient
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.catalog import file_specs
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import FUSED_PARTS, STAGE_TIMES, TIMED, TO_HOST, is_fused, time_slot
from cvserve.preprocess.preprocessor import STEPS
from cvserve.preprocess.tensors import LABELS
from cvserve.profiling import tritonstats
from cvserve.profiling.categories import CATEGORIES
from cvserve.profiling.sweep import serve_traced
from cvserve.profiling.sweep_plan import external_targets

pytestmark = pytest.mark.server

NAME = "fusedprof"
FUSED = f"{NAME}_fused"
FILE = f"""\
name: {NAME}
model:
  arch: mobilenet_v3_small
postprocess:
  kind: classification
serving:
  fuse_stages: true
  max_batch_size: 4
"""


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fused-profile") / "fused.yaml"
    path.write_text(FILE)
    return path


@pytest.fixture(scope="module")
def spec(pipeline_file: Path) -> PipelineSpec:
    (spec,) = file_specs(pipeline_file)[1]
    assert is_fused(spec)
    return spec


@pytest.fixture(scope="module")
def server(spec: PipelineSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The pipeline as `cvserve serve` serves it (no profiling variant), traced."""
    with serve_traced([spec], tmp_path_factory.mktemp("fused-triton")) as triton:
        yield triton.grpc_url


def test_the_fused_model_reports_its_parts_when_asked_and_only_then(
    server: str, spec: PipelineSpec, sample_images: dict[str, bytes]
) -> None:
    images = [sample_images["640x480.jpeg"], sample_images["300x200.jpeg"]]
    (target,), _ = external_targets(server, spec, ["server-cpu"])
    assert target.ensemble.name == FUSED
    with PipelineClient(server, target.ensemble) as alone, PipelineClient(server, spec) as ens:
        before = tritonstats.fetch_settled(alone.triton, [FUSED])[FUSED]
        got = alone.infer(images)
        delta = tritonstats.fetch_settled(alone.triton, [FUSED])[FUSED] - before
        plain = ens.infer(images)
    times = got[STAGE_TIMES.name]
    assert times.dtype == np.int64 and times.shape == (len(images), len(TIMED))
    assert (times == times[0]).all(), times  # per batch
    # Each part's work, and the answers' copy to the host (a no-op here, but timed); nothing
    # else is copied on the CPU.
    done = {time_slot(r, r) for r in FUSED_PARTS} | {time_slot("postprocess", TO_HOST)}
    assert all(times[0][i] > 0 for i in done), times
    assert not any(times[0][i] for i in set(range(len(TIMED))) - done), times
    assert delta.requests == 1 and 0 < times[0].sum() <= delta.ns["compute_infer"]
    assert STAGE_TIMES.name not in plain  # the ensemble never asks for them
    np.testing.assert_array_equal(plain[LABELS], got[LABELS])


def _rows(out: Path) -> list[dict]:
    (run,) = out.iterdir()
    rows = json.loads((run / "requests.json").read_text())
    assert rows
    return rows


def _split_within_5_percent(row: dict, spans: list[str]) -> None:
    assert all(row["spans_ms"].get(s, 0.0) > 0 for s in spans), row["spans_ms"]
    total = sum(row[f"{c}_ms"] for c in CATEGORIES)
    assert abs(total - row["end_to_end_ms"]) <= 0.05 * row["end_to_end_ms"], row
    for category in ("preprocessing", "inference", "postprocessing"):
        assert row[f"{category}_ms"] > 0, row


def test_profiling_the_running_server_splits_every_request(
    server: str, pipeline_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    argv = ["profile", "--file", str(pipeline_file), "--triton-url", server]
    argv += ["--sizes", "320x240", "--concurrency", "2", "--preprocess", "server-cpu"]
    argv += ["--duration", "1", "--images-per-size", "2", "--out", str(out)]
    assert main(argv) == 0
    for row in _rows(out):
        _split_within_5_percent(row, [f"{FUSED}.{part}" for part in FUSED_PARTS])


def test_profiling_it_served_by_the_profiler_splits_preprocessing_into_steps(
    pipeline_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    argv = ["profile", "--file", str(pipeline_file), "--sizes", "320x240", "--concurrency", "1"]
    argv += ["--preprocess", "server-cpu", "--duration", "1", "--images-per-size", "1"]
    argv += ["--split-preprocess", "--out", str(out)]
    assert main(argv) == 0
    steps = [f"{FUSED}.{step}" for step in STEPS]
    for row in _rows(out):
        _split_within_5_percent(row, [*(f"{FUSED}.{p}" for p in FUSED_PARTS), *steps])


def test_its_stages_apart_report_their_own_work_and_the_handoff_is_data_movement(
    pipeline_file: Path, tmp_path: Path
) -> None:
    apart = tmp_path / "apart.yaml"
    apart.write_text(pipeline_file.read_text().replace("fuse_stages: true", "fuse_stages: false"))
    out = tmp_path / "runs"
    argv = ["profile", "--file", str(apart), "--sizes", "320x240"]
    argv += ["--concurrency", "1", "--preprocess", "server-cpu", "--duration", "1"]
    argv += ["--images-per-size", "1", "--out", str(out)]
    assert main(argv) == 0
    stages = {"preprocess": "preprocess", "inference": "dnn", "postprocess": "postprocess"}
    for row in _rows(out):
        work = [f"{NAME}_{stages[part]}.{part}" for part in FUSED_PARTS]
        handoffs = [f"{NAME}_{stages[part]}.handoff" for part in FUSED_PARTS]
        _split_within_5_percent(row, [*work, *handoffs])
        assert row["data_movement_ms"] >= sum(row["spans_ms"][h] for h in handoffs) * 0.99, row


@pytest.mark.kafka
def test_profiling_it_across_kafka_splits_every_request_and_its_steps_from_the_results(
    kafka: KafkaBroker, pipeline_file: Path, tmp_path: Path
) -> None:
    # The profiler serves it fused as it runs, its ensemble returning STAGE_TIMES; a stage
    # worker calls it and carries them in its result, where the profiler reads them back.
    out = tmp_path / "runs"
    argv = ["profile", "--file", str(pipeline_file), "--kafka", kafka.bootstrap]
    argv += ["--sizes", "320x240", "--concurrency", "2", "--duration", "1.5"]
    argv += ["--images-per-size", "2", "--split-preprocess", "--out", str(out)]
    assert main(argv) == 0
    rows = _rows(out)
    assert all(row["triton_traced"] for row in rows), rows[0]
    steps = [f"{FUSED}.{step}" for step in STEPS]
    for row in rows:
        _split_within_5_percent(row, [*(f"{FUSED}.{part}" for part in FUSED_PARTS), *steps])
