"""`cvserve bench engines`: one row per engine, and `--store` feeds the measured choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvserve.deploy import measurements
from cvserve.models.engine_choice import stage_choice
from cvserve.pipelines.catalog import classify
from cvserve.profiling.bench.engines import (
    REFERENCE,
    bench_engines,
    engine_rounds,
    rates_summary,
)


def test_every_engine_is_a_row_and_the_run_is_what_stages_choose_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(measurements.STORE_ENV, str(tmp_path / "store"))
    spec = classify("mobilenet_v3_small", max_batch_size=1, torch_threads=1)
    report = bench_engines(
        [spec], batches=(1,), duration_s=0.1, out=tmp_path / "e.json", store=True, rounds=3
    )
    rows = report["results"]
    assert report["rounds"] == 3
    for row in rows:
        assert len(row["rounds"]) == 3 and row["images_per_s_spread"]["rounds"] == 3
        ratio = row["vs_torch_spread"]  # the figure is its median, rounded for the table
        assert ratio["min"] <= ratio["median"] <= ratio["max"]
        assert row["vs_torch"] == round(ratio["median"], 2)
    assert {(r["engine"], r["precision"]) for r in rows} >= {
        ("torch", "fp32"),
        ("torch_channels_last", "fp32"),
        ("onnxruntime", "fp32"),
        ("openvino", "fp32"),
    }
    assert all(r["images_per_s"] > 0 for r in rows)
    choice = stage_choice(spec.stage_by_role("inference"))
    assert "stored" in choice.reason  # read from the bench's run, not measured again
    rates = {m.engine: m.images_per_s for m in choice.measured}
    for row in rows:
        if row["precision"] == "fp32":
            assert rates[row["engine"]] == row["images_per_s"]


def test_engines_take_turns_each_round_in_alternating_order() -> None:
    log: list[str] = []

    def run_of(name: str):
        return lambda x: log.append(name)

    runs = {("torch", "fp32"): run_of("torch"), ("openvino", "bf16"): run_of("openvino")}
    rates = engine_rounds(runs, [0], rounds=3, duration_s=0.0)
    # One pass of each engine per round (two calls: the least a pass makes), order reversed.
    assert log == ["torch"] * 2 + ["openvino"] * 4 + ["torch"] * 4 + ["openvino"] * 2
    assert {key: len(per_round) for key, per_round in rates.items()} == {key: 3 for key in runs}


def test_vs_torch_is_the_median_of_ratios_within_rounds() -> None:
    # Round 2 is slow for both engines alike: per round openvino is 2x torch throughout.
    rates = {REFERENCE: [10.0, 5.0, 10.0], ("openvino", "fp32"): [20.0, 10.0, 19.0]}
    summary = rates_summary(rates)
    openvino = summary["openvino", "fp32"]
    assert openvino["images_per_s"] == 19.0 and openvino["rounds"] == [20.0, 10.0, 19.0]
    assert openvino["vs_torch"] == 2.0
    assert openvino["vs_torch_spread"] == pytest.approx(
        {"median": 2.0, "min": 1.9, "max": 2.0, "rounds": 3}
    )
    assert summary[REFERENCE]["vs_torch"] == 1.0
    assert rates_summary({("openvino", "fp32"): [1.0]})["openvino", "fp32"]["vs_torch"] is None
