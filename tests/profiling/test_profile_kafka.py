"""`cvserve profile --pipeline detect_identify --kafka` and `cvserve bench detect_identify` on
the session's real Kafka broker and a real, traced Triton: stage workers as processes, every
request's hops and both stages' Triton traces joined into one trace."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_testing import require_tool
from PIL import Image

from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.triton import TritonServer
from cvserve.models.repository.local import write_repository
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.catalog import COMPOSITES
from cvserve.pipelines.spec import PipelineSpec
from cvserve.profiling.categories import CATEGORIES
from cvserve.profiling.tritontrace import TraceUnavailable, TritonTracer, server_args

pytestmark = [pytest.mark.kafka, pytest.mark.server]

PIPELINE = "detect_identify"
STAGES = COMPOSITES[PIPELINE].parts
FIRST_TRANSIT = "detect.ready → detect.consumed"  # the image's fetch by the detect worker


@pytest.fixture(scope="module")
def traced_triton_url(
    request: pytest.FixtureRequest,
    task_specs: dict[str, PipelineSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The session Triton if it can trace (started with a trace file), else a Triton of this
    module serving the same ``detect`` and ``identify`` with a trace file (stopped after it)."""
    session: TritonServer = request.getfixturevalue("triton")
    try:
        TritonTracer.attach(session.grpc_client())
    except TraceUnavailable:
        pass
    else:
        yield session.grpc_url
        return
    workdir = tmp_path_factory.mktemp("traced-triton")
    for name in STAGES:
        write_repository(task_specs[name], workdir / "repository")
    server = TritonServer(
        workdir / "repository",
        workdir=workdir / "server",
        extra_args=server_args(workdir / "traces" / "trace.json"),
    )
    (workdir / "traces").mkdir()
    server.start(timeout_s=180)
    yield server.grpc_url
    server.stop()


@pytest.fixture(scope="module")
def run(kafka: KafkaBroker, traced_triton_url: str, tmp_path_factory: pytest.TempPathFactory):
    """A tiny sweep: one size, concurrency 1 and 2, a second or so each."""
    out = tmp_path_factory.mktemp("runs")
    argv = ["profile", "--pipeline", PIPELINE, "--kafka", kafka.bootstrap]
    argv += ["--triton-url", traced_triton_url, "--sizes", "160x120", "--concurrency", "1,2"]
    argv += ["--duration", "1.5", "--images-per-size", "2", "--out", str(out)]
    assert main(argv) == 0
    (folder,) = out.iterdir()
    return folder


@pytest.fixture(scope="module")
def rows(run: Path) -> list[dict]:
    return json.loads((run / "requests.json").read_text())


def test_run_folder_files_exist_and_parse(run: Path, rows: list[dict]) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["transport"]["kind"] == "kafka"
    assert summary["transport"]["stages"] == list(STAGES)
    assert {(p["size"], p["concurrency"]) for p in summary["points"]} == {
        ("160x120", 1),
        ("160x120", 2),
    }
    for point in summary["points"]:
        assert point["requests"] > 0 and point["incomplete"] == 0 and point["errors"] == 0
        assert point["crops_per_s"] > 0
    with (run / "requests.csv").open() as handle:
        assert (
            len(list(csv.DictReader(handle)))
            == len(rows)
            == sum(p["requests"] for p in summary["points"])
        )
    for png in ("shares.png", "concurrency.png"):
        with Image.open(run / png) as image:
            image.load()
    events = json.loads((run / "trace.json").read_text())["traceEvents"]
    processes = {e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert {"client", "broker", "worker:detect", "worker:identify", "triton"} <= processes
    assert len(summary["advice"]) == 1 and "broker transit" in summary["advice"][0]
    assert summary["clocks"]["broker_hops"]["skew_bound_ns"] >= 0
    assert "broker advice" in (run / "summary.txt").read_text()


def test_every_request_sums_to_its_end_to_end_within_5_percent(rows: list[dict]) -> None:
    for row in rows:
        total = sum(row[f"{c}_ms"] for c in CATEGORIES)
        assert total == pytest.approx(row["end_to_end_ms"], rel=0.05), row
        assert row["coverage"] >= 0.95, row


def test_broker_transit_is_data_movement(run: Path, rows: list[dict]) -> None:
    for row in rows:
        assert row["spans_ms"][FIRST_TRANSIT] > 0, row["spans_ms"]
        transit = row["kinds_ms"]["broker_transit"]
        assert row["data_movement_ms"] >= transit - 1e-3, row
    for point in json.loads((run / "summary.json").read_text())["points"]:
        moved = point["categories"]["data_movement"]["mean_ms"]
        assert 0 < point["broker_transit_ms"] <= moved + 1e-6


def test_triton_spans_of_both_stages_are_joined(run: Path, rows: list[dict]) -> None:
    for row in rows:
        assert row["triton_traced"], row["request_id"]
        for stage in STAGES:
            assert row["spans_ms"][f"{stage}_dnn.compute_infer"] > 0, (stage, row["spans_ms"])
    summary = json.loads((run / "summary.json").read_text())
    for point in summary["points"]:
        compared = point["triton_vs_stats"]
        assert {f"{stage}_dnn" for stage in STAGES} <= set(compared)
        for model, phases in compared.items():
            assert phases["requests"]["trace"] == phases["requests"]["stats"], model
        assert compared["detect_dnn"]["requests"]["trace"] == point["requests"]
        crops = point["crops_mean"] * point["requests"]
        assert compared["identify_dnn"]["requests"]["trace"] == pytest.approx(crops)
    names = {e["name"] for e in json.loads((run / "trace.json").read_text())["traceEvents"]}
    assert {"triton:detect", "triton:identify", "detect.dispatched → detect.answered"} <= names


def test_bench_compares_one_and_two_workers_per_stage(
    kafka: KafkaBroker, traced_triton_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", PIPELINE, "--kafka", kafka.bootstrap, "--triton-url", traced_triton_url]
    argv += ["--workers", "1,2", "--size", "160x120", "--concurrency", "2", "--duration", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["workers_per_stage"] for r in report["results"]] == [1, 2]
    assert report["machine"]["cores"] >= 1
    for row in report["results"]:
        assert row["images"] > 0 and row["incomplete"] == 0 and row["errors"] == 0
        assert row["crops"] >= row["images"] and row["crops_per_s"] > 0
        # Every process of the pipeline spent CPU on it, each found by what it is.
        cpu = row["cpu_ms_per_image"]
        assert all(cpu.get(role, 0) > 0 for role in ("kafka", "triton", "workers", "client")), cpu
        assert 0 < row["cores_busy"] <= report["machine"]["cores"] * 1.1


@pytest.mark.redis
def test_profile_across_redis_streams_attributes_the_same_hops(
    traced_triton_url: str, tmp_path: Path
) -> None:
    """``--broker redis``: the same requests, hops and Triton joins across Redis Streams (a
    local redis-server started for the run), so the broker's cost compares with Kafka's."""
    require_tool("redis-server", "apt-get install redis-server")
    argv = ["profile", "--pipeline", PIPELINE, "--broker", "redis", "--triton-url"]
    argv += [traced_triton_url, "--sizes", "160x120", "--concurrency", "1", "--duration", "1.5"]
    argv += ["--images-per-size", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["transport"]["kind"] == "redis"
    (point,) = summary["points"]
    assert point["transport"] == "redis" and point["broker_transit_ms"] > 0
    requests = json.loads((folder / "requests.json").read_text())
    assert requests and all(r["triton_traced"] for r in requests)
    for row in requests:  # the whole end to end attributed, as over Kafka
        total = sum(row[f"{c}_ms"] for c in CATEGORIES)
        assert total == pytest.approx(row["end_to_end_ms"], rel=0.05), row
