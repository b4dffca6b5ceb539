"""The profiler against a real tritonserver whose models sleep known delays.

One server for the module: the ``classify`` ensemble and ``classify_tensor``, with classify's
names and tensors, each stage replaced by a python-backend model that sleeps a known time per
batch (the preprocess one also reports a known decode/resize/normalize split). A broker hop with
a known transit is simulated in process (an in-memory topic with a delay), carrying the real
`broker.schema` headers.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import queue
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from cvserve.broker.producer import SUBMIT_HOP
from cvserve.broker.schema import (
    Message,
    Record,
    TraceContext,
    decode_outputs,
    result_message,
)
from cvserve.deploy.triton import TritonServer
from cvserve.models.repository.local import write_repository
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.catalog import classify
from cvserve.pipelines.spec import BatchingSpec, PipelineSpec, StageParams
from cvserve.pipelines.variants import tensor_input, with_preprocess_times
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.preprocess.tensors import IMAGE, SCORES, pad_images
from cvserve.profiling.attribution import attribute
from cvserve.profiling.categories import CATEGORIES
from cvserve.profiling.trace import Trace, WallClock, add_hop_spans, sample_clocks
from cvserve.profiling.tritontrace import TritonTracer, attach_triton, server_args

pytestmark = pytest.mark.server

DELAYS_S = {"preprocess": 0.030, "inference": 0.050, "postprocess": 0.010}
CATEGORY_OF_ROLE = {"preprocess": "preprocessing", "inference": "inference"}
PREPROCESS_SPLIT = {"decode": 0.5, "resize_crop": 0.3, "normalize": 0.2}  # of its delay
BROKER_TRANSIT_S, CONSUMER_WAIT_S = 0.030, 0.005

DELAY_MODEL = '''
"""Test stage: sleeps ``delay_s`` once per batch; answers zeros of its configured outputs, and
PREPROCESS_TIMES (a known split of the delay, ns) when configured."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

DTYPES = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = json.loads(config["parameters"]["cvserve_stage"]["string_value"])
        self.delay_s = float(params["delay_s"])
        self.split = params.get("split", [])
        self.input = config["input"][0]["name"]
        self.outputs = [
            (o["name"], DTYPES[o["data_type"]], [int(d) for d in o["dims"]])
            for o in config["output"]
        ]

    def execute(self, requests):
        time.sleep(self.delay_s)
        responses = []
        for request in requests:
            n = pb_utils.get_input_tensor_by_name(request, self.input).as_numpy().shape[0]
            tensors = []
            for name, dtype, dims in self.outputs:
                value = np.zeros((n, *dims), dtype)
                if name == "PREPROCESS_TIMES":
                    value[:] = [int(f * self.delay_s * 1e9) for f in self.split]
                tensors.append(pb_utils.Tensor(name, value))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
'''


@dataclasses.dataclass(frozen=True)
class DelayParams(StageParams):
    delay_s: float
    split: tuple[float, ...]


def delay_pipeline() -> PipelineSpec:
    """classify (names, tensors, PREPROCESS_TIMES) with every stage a known sleep."""
    base = with_preprocess_times(classify())
    stages = tuple(
        dataclasses.replace(
            stage,
            adapter="delay_model",
            params=DelayParams(DELAYS_S[stage.role], tuple(PREPROCESS_SPLIT.values())),
            batching=BatchingSpec(max_batch_size=4, max_queue_delay_us=500),
        )
        for stage in base.stages
    )
    return dataclasses.replace(base, stages=stages)


@pytest.fixture(scope="module")
def delay_spec() -> PipelineSpec:
    return delay_pipeline()


@pytest.fixture(scope="module")
def server(delay_spec: PipelineSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("delay-triton")
    repository = workdir / "repository"
    for spec in (delay_spec, tensor_input(delay_spec)):
        write_repository(spec, repository)
    for stage in delay_spec.stages:
        (repository / stage.name / "1" / "delay_model.py").write_text(DELAY_MODEL)
    triton = TritonServer(
        repository, workdir=workdir / "server", extra_args=server_args(workdir / "trace.json")
    )
    triton.start(timeout_s=120)
    yield triton.grpc_url
    triton.stop()


@pytest.fixture(scope="module")
def run(server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cvserve profile`` against the delay server: one size, concurrency 1 and 2."""
    out = tmp_path_factory.mktemp("runs")
    status = main(
        [
            "profile",
            "--pipeline",
            "classify",
            "--triton-url",
            server,
            "--sizes",
            "320x240",
            "--concurrency",
            "1,2",
            "--preprocess",
            "client-cpu,server-cpu,server-gpu",
            "--duration",
            "1.2",
            "--images-per-size",
            "2",
            "--split-preprocess",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    (folder,) = out.iterdir()
    return folder


@pytest.fixture(scope="module")
def rows(run: Path) -> list[dict]:
    return json.loads((run / "requests.json").read_text())


def assert_near(measured_ms: float, expected_s: float, what: str) -> None:
    expected_ms = expected_s * 1e3
    tolerance = max(0.10 * expected_ms, 2.0)
    assert (
        abs(measured_ms - expected_ms) <= tolerance
    ), f"{what}: {measured_ms:.2f} ms attributed, {expected_ms:.2f} ms injected"


def median(values: list[float]) -> float:
    assert values
    return statistics.median(values)


def test_injected_delays_are_attributed_to_their_categories(rows: list[dict]) -> None:
    for placement in ("server-cpu", "client-cpu"):
        for concurrency in (1, 2):
            mine = [
                r for r in rows if (r["placement"], r["concurrency"]) == (placement, concurrency)
            ]
            label = f"{placement} x{concurrency}"
            assert_near(median([r["inference_ms"] for r in mine]), DELAYS_S["inference"], label)
            assert_near(
                median([r["postprocessing_ms"] for r in mine]), DELAYS_S["postprocess"], label
            )
            if placement == "server-cpu":
                assert_near(
                    median([r["preprocessing_ms"] for r in mine]), DELAYS_S["preprocess"], label
                )
                for step, share in PREPROCESS_SPLIT.items():
                    spans = [r["spans_ms"][f"classify_preprocess.{step}"] for r in mine]
                    assert_near(median(spans), share * DELAYS_S["preprocess"], f"{label} {step}")


def test_every_request_sums_to_its_end_to_end_within_5_percent(rows: list[dict]) -> None:
    assert {(r["placement"], r["concurrency"]) for r in rows} == {
        (p, c) for p in ("client-cpu", "server-cpu") for c in (1, 2)
    }
    for row in rows:
        assert row["triton_traced"], row["request_id"]
        assert row["unattributed_ms"] >= 0
        assert row["coverage"] >= 0.95, row
        total = sum(row[f"{c}_ms"] for c in CATEGORIES)
        assert total == pytest.approx(row["end_to_end_ms"], abs=1e-3)


def test_triton_part_agrees_with_the_statistics_api(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    for point in summary["points"]:
        comparison = point["triton_vs_stats"]
        assert set(comparison) == {s for s in comparison if s.startswith("classify_")}
        assert len(comparison) == (3 if point["placement"] == "server-cpu" else 2)
        for model, phases in comparison.items():
            assert phases.pop("requests") == {
                "trace": point["requests"],
                "stats": point["requests"],
            }, model
            for phase, values in phases.items():
                assert values["trace_ms"] == pytest.approx(
                    values["stats_ms"], rel=0.01, abs=0.05
                ), f"{point['placement']} x{point['concurrency']} {model} {phase}"
        assert point["max_skew_ns"] == 0  # Triton's clock is the client's


def test_run_folder_files_exist_and_parse(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert [m for m in summary["skipped"] if m.startswith("server-gpu skipped")]
    with (run / "requests.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == sum(p["requests"] for p in summary["points"])
    for png in ("shares.png", "concurrency.png"):
        with Image.open(run / png) as image:
            image.load()
    events = json.loads((run / "trace.json").read_text())["traceEvents"]
    names = {e["name"] for e in events if e["ph"] == "X"}
    assert {"request", "send", "receive", "classify_dnn.compute_infer", "decode"} <= names
    assert "placement advice" in (run / "summary.txt").read_text()


class DelayedTopic:
    """An in-process stand-in for a Kafka topic: a record comes out ``delay_s`` after it went
    in (the broker transit, injected)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._queue: queue.Queue[tuple[float, Record]] = queue.Queue()

    def produce(self, record: Record) -> None:
        self._queue.put((time.monotonic() + self.delay_s, record))

    def consume(self, timeout_s: float = 30.0) -> Record:
        due, record = self._queue.get(timeout=timeout_s)
        time.sleep(max(0.0, due - time.monotonic()))  # the injected transit
        return record


def stage_worker(url: str, topic: DelayedTopic, results: DelayedTopic, count: int) -> None:
    """What a broker stage worker does per message, with the hops it stamps."""
    client = grpcclient.InferenceServerClient(url)
    try:
        for _ in range(count):
            message = Message.from_record(topic.consume()).with_hop("classify.consumed")
            time.sleep(CONSUMER_WAIT_S)  # the injected wait before the worker's Triton call
            message = message.with_hop("classify.dispatched")
            batch = pad_images([message.value])
            tensor = grpcclient.InferInput(IMAGE, list(batch.shape), "UINT8")
            tensor.set_data_from_numpy(batch)
            answer = client.infer(
                "classify",
                [tensor],
                outputs=[grpcclient.InferRequestedOutput(SCORES)],
                request_id=message.request_id,
            )
            result = result_message(message, "classify", {SCORES: answer.as_numpy(SCORES)[0]})
            results.produce(result.with_hop("classify.produced").to_record())
    finally:
        client.close()


def test_broker_hop_transit_and_wait_are_attributed_like_the_triton_delays(
    server: str, delay_spec: PipelineSpec
) -> None:
    requests, image = 3, synthetic_image(320, 240, seed=1)
    inbound, results = DelayedTopic(BROKER_TRANSIT_S), DelayedTopic(0.0)
    worker = threading.Thread(target=stage_worker, args=(server, inbound, results, requests))
    client = grpcclient.InferenceServerClient(server)
    tracer = TritonTracer.attach(client)
    first = sample_clocks()
    done: list[tuple[Trace, list[tuple[str, int]]]] = []
    with tracer.tracing():
        worker.start()
        for i in range(requests):
            trace = Trace(f"broker-{i}").begin()
            with trace.span("serialize"):
                context = TraceContext.new().hop(SUBMIT_HOP)
                message = Message(trace.request_id, "classify", "classify", image, "image/jpeg")
                record = dataclasses.replace(message, trace=context).to_record()
            inbound.produce(record)
            received = results.consume()
            arrived = time.time_ns()
            with trace.span("deserialize"):
                result = Message.from_record(received)
                scores = decode_outputs(result.value)[SCORES]
            trace.finish()
            assert scores.shape == (5,)
            done.append((trace, [(h.label, h.t_ns) for h in result.trace.hops]))
            done[-1][1].append(("client.consumed", arrived))
        worker.join(timeout=60)
    found = tracer.collect([t.request_id for t, _ in done])
    client.close()
    clock = WallClock(first, sample_clocks())
    roles = {s.name: s.role for s in delay_spec.stages}
    attributions = []
    for trace, hops in done:
        spans = add_hop_spans(trace, hops, clock)
        (call,) = [s for s in spans if s.kind == "worker"]
        attach_triton(trace, found[trace.request_id], roles, call.start_ns, call.end_ns, call)
        attributions.append(attribute(trace))
    assert clock.skew_bound_ns < 1_000_000
    transit = median([a.by_span["submit → classify.consumed"] / 1e6 for a in attributions])
    wait = median(
        [a.by_span["classify.consumed → classify.dispatched"] / 1e6 for a in attributions]
    )
    assert_near(transit, BROKER_TRANSIT_S, "broker transit")
    assert_near(wait, CONSUMER_WAIT_S, "consumer wait")
    for role, category in CATEGORY_OF_ROLE.items():
        attributed = median([a.by_category[category] / 1e6 for a in attributions])
        assert_near(attributed, DELAYS_S[role], category)
    for a in attributions:
        assert a.coverage >= 0.95
        assert a.by_category["data_movement"] >= a.by_span["submit → classify.consumed"]
        assert np.isclose(sum(a.by_category.values()), a.end_to_end_ns)


def test_bench_profiling_measures_on_and_off(server: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "profiling", "--triton-url", server, "--size", "320x240"]
    argv += ["--concurrency", "2", "--duration", "0.8", "--pairs", "1", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    modes = {r["mode"]: r for r in report["runs"]}
    assert set(modes) == {"on", "off"}
    assert modes["on"]["traced"] == modes["on"]["requests"] > 0
    assert modes["off"]["traced"] == 0 and modes["off"]["errors"] == 0
    assert len(report["pair_ratios"]) == 1 and report["on_over_off"] > 0
    assert report["recording_cost_us_per_request"] > 0
