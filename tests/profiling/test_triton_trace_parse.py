"""Triton 2.51 trace files (a real one, from a two-model ensemble) turned into spans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stage_times_testing import stage_row

from cvserve.profiling.attribution import attribute
from cvserve.profiling.categories import FUSED, ROLE_CATEGORY
from cvserve.profiling.trace import Trace
from cvserve.profiling.tritontrace import (
    ModelTrace,
    attach_triton,
    parse_trace_entries,
    phase_totals,
    requests_by_id,
    server_args,
    split_compute,
)

# Written by the pytriton 0.7.0 tritonserver (2.51): ensemble "ens" = model "a" → model "b",
# two requests "c0-0" and "c0-1" over gRPC.
SAMPLE = Path(__file__).parent / "data" / "triton-2.51-ensemble-trace.json"
ROLES = {"a": "preprocess", "b": "inference"}


@pytest.fixture
def requests() -> dict[str, ModelTrace]:
    return requests_by_id(parse_trace_entries(json.loads(SAMPLE.read_text())))


def test_composing_models_are_children_of_their_ensemble_with_the_request_id(
    requests: dict[str, ModelTrace],
) -> None:
    assert sorted(requests) == ["c0-0", "c0-1"]
    ensemble = requests["c0-0"]
    assert ensemble.model == "ens" and ensemble.parent_id is None
    assert [c.model for c in ensemble.children] == ["a", "b"]
    assert all(c.request_id == "c0-0" for c in ensemble.children)
    assert ensemble.phase_ns() == {}  # an ensemble computes nothing itself
    phases = ensemble.children[1].phase_ns()
    assert list(phases) == ["queue", "compute_input", "compute_infer", "compute_output"]
    assert all(ns > 0 for ns in phases.values())


def test_phase_totals_sum_each_models_phases_over_requests(
    requests: dict[str, ModelTrace],
) -> None:
    totals = phase_totals(requests.values())
    assert set(totals) == {"a", "b"}
    expected = sum(r.children[0].phase_ns()["compute_infer"] for r in requests.values())
    assert totals["a"]["compute_infer"] == expected
    assert totals["a"]["requests"] == 2


def _call_around(request: ModelTrace, margin_ns: int = 1_000_000) -> tuple[int, int]:
    ts = request.timestamps
    return ts["REQUEST_START"] - margin_ns, ts["INFER_RESPONSE_COMPLETE"] + margin_ns


def test_a_traced_call_splits_into_send_server_phases_and_receive(
    requests: dict[str, ModelTrace],
) -> None:
    request = requests["c0-1"]
    start, end = _call_around(request)
    trace = Trace("c0-1").begin(start)
    skew = attach_triton(trace, request, ROLES, start, end)
    trace.finish(end)
    assert skew == 0
    names = [s.name for s in trace.spans]
    assert names[0] == "send" and names[-1] == "receive"
    assert "a.compute_infer" in names and "b.queue" in names
    a = attribute(trace)
    infer_b = request.children[1].phase_ns()["compute_infer"]
    assert a.by_span["b.compute_infer"] == infer_b
    assert a.by_category["inference"] == infer_b
    assert a.by_category["preprocessing"] == request.children[0].phase_ns()["compute_infer"]
    assert a.unattributed_ns == 0


def test_server_timestamps_outside_the_call_are_reported_as_skew(
    requests: dict[str, ModelTrace],
) -> None:
    request = requests["c0-0"]
    start, end = _call_around(request, margin_ns=0)
    trace = Trace("c0-0").begin(start + 5_000)
    skew = attach_triton(trace, request, ROLES, start + 5_000, end)
    assert skew == 5_000
    assert all(s.start_ns >= start + 5_000 for s in trace.spans)  # clamped into the call


def test_reported_preprocess_steps_nest_in_its_compute_scaled_to_fit() -> None:
    trace = Trace("r").begin(0)
    compute = trace.add("compute_infer", 0, 1_000, role="preprocess", stage="x_preprocess")
    split_compute(trace, compute, "preprocess", [600, 600, 800], None)  # 2,000 in 1,000: halved
    steps = trace.spans[1:]
    assert [s.kind for s in steps] == ["decode", "resize_crop", "normalize"]
    assert [s.duration_ns for s in steps] == [300, 300, 400]
    assert all(s.parent_id == compute.span_id for s in steps)
    assert attribute(trace.finish(1_000)).by_category["preprocessing"] == 1_000


def test_untraced_call_is_one_overhead_span() -> None:
    trace = Trace("r").begin(0)
    attach_triton(trace, None, ROLES, 10, 90)
    assert [(s.name, s.category) for s in trace.spans] == [("triton (untraced)", "other")]


def test_server_arguments_name_the_trace_file_and_start_with_tracing_off(tmp_path: Path) -> None:
    args = server_args(tmp_path / "t.json")
    assert f"--trace-config=triton,file={tmp_path / 't.json'}" in args
    assert "--trace-config=level=OFF" in args


def test_a_fused_models_reported_parts_split_its_compute_by_category() -> None:
    trace = Trace("r").begin(0)
    compute = trace.add("compute_infer", 0, 1_000, role=FUSED, stage="x_fused")
    split_compute(trace, compute, FUSED, [200, 200, 100], stage_row(500, 250, 80, 50, 20))
    kinds = [(s.kind, s.duration_ns) for s in trace.spans[1:]]
    assert kinds == [  # in `TIMED` order, parts of 0 ns left out
        ("preprocess", 500),
        ("to_device", 50),
        ("inference", 250),
        ("postprocess", 80),
        ("to_host", 20),
        ("handoff", 100),
        ("decode", 200),
        ("resize_crop", 200),
        ("normalize", 100),
    ]
    preprocess = trace.spans[1]
    assert all(s.parent_id == preprocess.span_id for s in trace.spans[7:])
    got = attribute(trace.finish(1_000)).by_category
    assert (got["preprocessing"], got["inference"], got["postprocessing"]) == (500, 250, 80)
    # The copies it made (70 ns) and what the parts leave (100 ns: Triton <-> the stub).
    assert got["data_movement"] == 170


@pytest.mark.parametrize("role", ["preprocess", "inference", "postprocess"])
def test_a_stage_apart_keeps_its_own_work_and_its_handoff_is_data_movement(role: str) -> None:
    category = ROLE_CATEGORY[role]
    trace = Trace("r").begin(0)
    compute = trace.add("compute_infer", 0, 1_000, role=role, stage="x")
    # The stages' own times added up: each model takes only its role's places.
    split_compute(trace, compute, role, None, stage_row(700, 500, 300, dnn_in=100, post_out=50))
    own = {"preprocess": 700, "inference": 500, "postprocess": 300}[role]
    copies = {
        "preprocess": [],
        "inference": [("to_device", 100)],
        "postprocess": [("to_host", 50)],
    }[role]
    moved = sum(ns for _, ns in copies)
    expected = [(role, own), *copies, ("handoff", 1_000 - own - moved)]
    if role == "inference":  # its inputs' copy comes before its work
        expected[:2] = expected[1::-1]
    assert [(s.kind, s.duration_ns) for s in trace.spans[1:]] == expected
    got = attribute(trace.finish(1_000)).by_category
    assert (got[category], got["data_movement"]) == (own, 1_000 - own)


def test_a_stage_that_reported_nothing_keeps_its_whole_compute() -> None:
    trace = Trace("r").begin(0)
    compute = trace.add("compute_infer", 0, 1_000, role="postprocess", stage="x")
    split_compute(trace, compute, "postprocess", None, stage_row(700, 600, post_out=5))
    split_compute(trace, compute, FUSED, None, None)
    assert trace.spans[1:] == []
    assert attribute(trace.finish(1_000)).by_category["postprocessing"] == 1_000


def test_a_model_called_by_itself_gets_its_phases_and_its_parts(
    requests: dict[str, ModelTrace],
) -> None:
    alone = requests["c0-1"].children[1]  # model "b" as if called directly: no children
    alone = ModelTrace(**{**alone.__dict__, "children": [], "parent_id": None})
    start, end = alone.timestamps["REQUEST_START"] - 1_000, alone.timestamps["REQUEST_END"] + 1_000
    trace = Trace("b").begin(start)
    attach_triton(trace, alone, {"b": FUSED}, start, end, stage_ns=stage_row(1_000, 2_000, 500))
    trace.finish(end)
    names = [s.name for s in trace.spans]
    assert "b.compute_infer" in names and "b.preprocess" in names and "b.postprocess" in names
    a = attribute(trace)
    assert a.by_category["postprocessing"] > 0 and a.by_category["preprocessing"] > 0
    assert sum(a.by_category.values()) == a.end_to_end_ns
