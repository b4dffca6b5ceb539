"""The engine chosen by measurement: the rule, the store, and real measurements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cvserve.deploy import measurements
from cvserve.models.engine_choice import (
    FP32_BOUND,
    MARGIN,
    Measured,
    choose_engine,
    measure,
    pick,
    rel_diff,
    stage_choice,
    with_chosen_engine,
)
from cvserve.models.params import DnnParams
from cvserve.pipelines.catalog import classify, pipeline


@pytest.fixture(autouse=True)
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(measurements.STORE_ENV, str(tmp_path / "store"))
    return tmp_path / "store"


def _m(engine: str, rate: float, ok: bool = True) -> Measured:
    return Measured(engine, "fp32", rate, 0.0 if ok else 1.0, ok, f"{engine}/fp32")


ARCH = DnnParams(arch="mobilenet_v3_small", torch_threads=1)


def test_the_fastest_within_bound_wins() -> None:
    best, why = pick(ARCH, [_m("torch", 10), _m("onnxruntime", 30), _m("openvino", 50, ok=False)])
    assert best.engine == "onnxruntime"
    assert "torch/fp32 10" in why and "openvino/fp32 50" in why


def test_the_models_own_engine_stays_unless_another_is_clearly_faster() -> None:
    close = 10 * (1 + MARGIN / 2)
    assert pick(ARCH, [_m("torch", 10), _m("onnxruntime", close)])[0].engine == "torch"
    onnx_file = DnnParams(model_file="/m.onnx", model_format="onnx")
    rows = [_m("onnxruntime", 10), _m("openvino", 10 * (1 + 2 * MARGIN))]
    assert pick(onnx_file, rows)[0].engine == "openvino"


def test_relative_difference_and_a_different_shape() -> None:
    ref = [np.array([[10.0, -20.0]])]
    assert rel_diff([np.array([[10.0, -20.01]])], ref) == pytest.approx(0.01 / 20)
    assert rel_diff([np.zeros((2, 2))], ref) == float("inf")


def test_a_choice_is_measured_once_then_read_from_the_store(own_store: Path) -> None:
    first = choose_engine(ARCH, (3, 224, 224), 1)
    assert "measured now" in first.reason
    engines = {m.engine for m in first.measured}
    assert engines == {"torch", "torch_channels_last", "onnxruntime", "openvino"}
    for m in first.measured:  # fp32 engines agree with torch on this network
        assert m.within_bound and m.rel_diff <= FP32_BOUND and m.images_per_s > 0, m
    fastest = pick(ARCH, first.measured)[0]
    assert (first.engine, first.precision) == (fastest.engine, fastest.precision)
    again = choose_engine(ARCH, (3, 224, 224), 1)
    assert "stored" in again.reason and again.measured == first.measured
    (store,) = own_store.glob("engines-*.json")
    data = json.loads(store.read_text())
    assert data["machine"]["cores"] >= 1 and len(data["entries"]) == 1
    # Another batch size is another measurement.
    assert "measured now" in choose_engine(ARCH, (3, 224, 224), 2).reason


def test_an_engine_that_cannot_run_the_model_is_not_a_candidate() -> None:
    spec = pipeline("detect")
    stage = spec.stage_by_role("inference")
    params = stage.params_as(DnnParams)
    rows = measure(params, stage.inputs[0].dims, 1, [t.name for t in stage.outputs])
    by_engine = {m.engine: m for m in rows}
    for engine in ("onnxruntime", "openvino"):
        assert not by_engine[engine].within_bound
        assert "cannot run" in by_engine[engine].ran_on
    assert by_engine["torch"].within_bound
    assert pick(params, rows)[0].engine in ("torch", "torch_channels_last")


def test_a_spec_names_the_chosen_engine_for_reports() -> None:
    spec = classify("mobilenet_v3_small", max_batch_size=1, torch_threads=1)
    named = with_chosen_engine(spec)
    engine = named.stage_by_role("inference").params_as(DnnParams).engine
    # The choice the served stage makes at load: the same stored measurement, not a new one
    # (two measurements of engines within the noise may rank them differently).
    again = stage_choice(spec.stage_by_role("inference"))
    assert "stored" in again.reason and engine == again.engine
    assert engine in {m.engine for m in again.measured if m.within_bound}
    fixed = classify("mobilenet_v3_small", engine="torch")
    assert with_chosen_engine(fixed) is fixed
