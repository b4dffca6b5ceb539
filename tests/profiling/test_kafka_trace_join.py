"""A detect_identify request's results (hops stamped at known instants) and Triton traces of its
three calls joined into one trace: fan-out lanes, Triton nested in its worker span, known
inference and transit attributed exactly, the categories summing to the end-to-end time."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cvserve.broker.crops import CROP_COUNT
from cvserve.broker.producer import SUBMIT_HOP
from cvserve.broker.results import READY_HOP, RECEIVED_HOP, expected_results, is_complete
from cvserve.broker.schema import Crop, Hop, Message, TraceContext, result_message
from cvserve.pipelines.app.pipeline_args import catalog_route
from cvserve.profiling.categories import CATEGORIES
from cvserve.profiling.kafkaload import HANDED_OFF, BrokerRequest
from cvserve.profiling.kafkatrace import hop_edges, join_request
from cvserve.profiling.trace import ClockSample, Trace, WallClock
from cvserve.profiling.tritontrace import ModelTrace

MS = 1_000_000
WALL_OFFSET = 1_700_000_000_000 * MS  # wall = monotonic + this, exactly (no skew)
PIPELINE = "detect_identify"


def hops(*stamps: tuple[str, float]) -> TraceContext:
    context = TraceContext.new()
    return replace(
        context, hops=tuple(Hop(label, int(ms * MS) + WALL_OFFSET) for label, ms in stamps)
    )


def ensemble_trace(
    model: str, call_id: str, start_ms: float, infer_ms: tuple[float, float]
) -> ModelTrace:
    """An ensemble of one DNN (``<model>_dnn``): request at ``start_ms``, compute_infer over
    ``infer_ms``, answered 1 ms after."""
    a, b = (int(t * MS) for t in infer_ms)
    dnn = ModelTrace(
        2,
        f"{model}_dnn",
        call_id,
        1,
        {
            "REQUEST_START": a - 2 * MS,
            "QUEUE_START": a - 2 * MS,
            "COMPUTE_START": a - MS,
            "COMPUTE_INPUT_END": a,
            "COMPUTE_OUTPUT_START": b,
            "COMPUTE_END": b + MS // 2,
            "REQUEST_END": b + MS // 2,
        },
    )
    return ModelTrace(
        1,
        model,
        call_id,
        None,
        {
            "REQUEST_START": int(start_ms * MS),
            "INFER_RESPONSE_COMPLETE": b + MS,
            "REQUEST_END": b + MS,
        },
        [dnn],
    )


@pytest.fixture
def request_and_traces() -> tuple[BrokerRequest, dict[str, ModelTrace]]:
    source = Message("rid", PIPELINE, "detect", b"jpeg", "image/jpeg")
    # The detect worker was ready (polling) before the image was sent: no wait for it.
    shared = [(SUBMIT_HOP, 1.5), ("detect.ready", 0.5), ("detect.consumed", 10)]
    shared += [("detect.dispatched", 12), ("detect.answered", 40), ("detect.emitting", 41)]
    detection = result_message(source, "detect", {CROP_COUNT: np.array([2])})
    detection = replace(
        detection,
        trace=hops(*shared, ("detect.produced", 45), (READY_HOP, 46), (RECEIVED_HOP, 50)),
    )
    crops = [
        replace(
            result_message(source, "identify", {"EMBEDDING": np.zeros(4, np.float32)}),
            crop=Crop(k, (0, 0, 8, 8)),
            trace=hops(
                *shared,
                ("detect.produced", 45.1 + k / 10),
                ("identify.ready", 30),
                ("identify.consumed", 50 + k / 2),
                ("identify.dispatched", 51 + 10 * k),
                ("identify.answered", 60 + 10 * k),
                ("identify.emitting", 61 + 10 * k),
                ("identify.produced", 62 + 10 * k),
                (READY_HOP, 63 + 10 * k),
                (RECEIVED_HOP, 65 + 10 * k),
            ),
        )
        for k in range(2)
    ]
    trace = Trace("rid").begin(0)
    trace.add("read", 0, MS)
    trace.add("serialize", MS, 2 * MS)
    trace.marks[HANDED_OFF] = 2 * MS
    request = BrokerRequest(trace, [crops[1], detection, crops[0]])
    triton = {
        "rid": ensemble_trace("detect", "rid", 13, (16, 36)),
        "rid:0": ensemble_trace("identify", "rid:0", 52, (54, 58)),
        "rid:1": ensemble_trace("identify", "rid:1", 62, (64, 68)),
    }
    return request, triton


CLOCK = WallClock(*[ClockSample(wall_ns=WALL_OFFSET, mono_ns=0, uncertainty_ns=0)] * 2)


def test_a_request_is_complete_once_its_detection_and_every_crop_arrived(
    request_and_traces,
) -> None:
    request, _ = request_and_traces
    crops = [m for m in request.results if m.crop is not None]
    (detection,) = [m for m in request.results if m.crop is None]
    assert expected_results(crops) is None and not is_complete(crops)
    assert expected_results([detection]) == 3 and not is_complete([detection, crops[0]])
    assert is_complete(request.results)


def test_shared_hops_become_one_span_and_each_crop_gets_its_own_lane(request_and_traces) -> None:
    request, _ = request_and_traces
    edges = hop_edges(request.results, CLOCK, first_ns=2 * MS)
    shared = [e for e in edges if e.b.startswith("detect.") and e.b != "detect.produced"]
    assert len(shared) == 5 and all(e.lane == 0 and len(e.call_ids) == 3 for e in shared)
    (submitted,) = [e for e in edges if e.a == SUBMIT_HOP]
    assert submitted.a_ns == submitted.b_ns == 2 * MS  # handed off at 2 ms; the worker waited
    (emit,) = [e for e in edges if (e.a, e.b) == ("detect.emitting", "detect.produced")]
    assert emit.b_ns == int(45.2 * MS)  # the last message the stage sent
    waits = [e for e in edges if e.b == "identify.ready"]
    assert all(e.a_ns == e.b_ns for e in waits)  # ready before the crop existed: no wait
    assert {e.lane for e in edges if e.b.startswith("identify.")} == {1, 2}


def test_both_stages_triton_spans_nest_in_their_calls_and_attribution_is_exact(
    request_and_traces,
) -> None:
    request, triton = request_and_traces
    roles = {"detect_dnn": "inference", "identify_dnn": "inference"}
    record = join_request(request, catalog_route(PIPELINE), CLOCK, triton, roles)
    assert record.triton_traced and record.skew_ns == 0
    trace, attribution = record.trace, record.attribution
    by_id = {s.span_id: s for s in trace.all_spans()}
    servers = [s for s in trace.spans if s.name.startswith("triton:")]
    names = sorted(s.name for s in servers)
    assert names == ["triton:detect", "triton:identify", "triton:identify"]
    for server in servers:
        call = by_id[server.parent_id]
        assert call.kind == "worker" and call.stage == server.stage
        assert call.name == f"{server.stage}.dispatched → {server.stage}.answered"
    assert sorted(s.lane for s in servers if s.stage == "identify") == [1, 2]

    assert attribution.end_to_end_ns == 75 * MS
    assert sum(attribution.by_category.values()) == attribution.end_to_end_ns
    assert set(attribution.by_category) == set(CATEGORIES)
    assert attribution.by_category["inference"] == (20 + 4 + 4) * MS
    # The first transit starts when the producer had the record, not at the submit stamp.
    assert attribution.by_span["detect.ready → detect.consumed"] == 8 * MS
    assert attribution.by_span["send"] == 3 * MS  # each call: dispatched 1 ms before Triton
    assert attribution.by_kind["broker_transit"] >= 8 * MS
    assert attribution.by_category["data_movement"] >= attribution.by_kind["broker_transit"]
    # Crop 1 waited for a free call while crop 0's ran; the batch waited before emitting.
    assert attribution.by_span["identify.answered → identify.emitting"] > 0
    assert attribution.by_kind["consumer_wait"] > 0
    assert attribution.unattributed_ns == 0
