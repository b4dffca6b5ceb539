"""`cvserve bench loadgen`: cvserve's client and the real perf_analyzer on one served ensemble,
alternating, with the per-model split from the statistics API for each (not timed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cvserve.deploy.triton import TritonServer
from cvserve.profiling.bench.loadgen import (
    bench_loadgen,
    compute_ms,
    input_data,
    perf_analyzer_env,
    split_shares,
    summarize_runs,
)
from cvserve.profiling.model_profile import InputPlan


def _perf_analyzer(tmp_path: Path) -> None:
    found = perf_analyzer_env(tmp_path)
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(found)
        pytest.skip(found)


def test_input_data_sends_each_image_as_its_bytes() -> None:
    class Plan:
        inputs = (InputPlan("IMAGE", "UINT8", (-1,), True),)

    data = input_data(Plan(), [b"\xff\xd8ab", b"\x01"])
    assert data == {
        "data": [
            {"IMAGE": {"content": [255, 216, 97, 98], "shape": [4]}},
            {"IMAGE": {"content": [1], "shape": [1]}},
        ]
    }


def test_shares_of_a_split_sum_to_one_and_compute_leaves_the_queue_out() -> None:
    split = {
        m: {"mean_ms": {"queue": q, "compute_input": 0, "compute_infer": c, "compute_output": 0}}
        for m, q, c in (("a", 1.0, 3.0), ("b", 0.0, 4.0))
    }
    assert split_shares(split, ["a", "b"]) == {"a": 0.5, "b": 0.5}
    assert compute_ms(split, ["a", "b"]) == 7.0


def _run(r: int, client: str, images_per_s: float) -> dict:
    phases = {"queue": 1.0, "compute_input": 0.0, "compute_infer": 4.0, "compute_output": 0.0}
    return {
        "round": r,
        "client": client,
        "concurrency": 4,
        "images_per_s": images_per_s,
        "p50_ms": 10.0,
        "p99_ms": 20.0,
        "models": {"m": {"mean_ms": phases}},
    }


def test_the_ratio_is_the_median_of_the_per_round_ratios_with_their_spread() -> None:
    # Round 2 ran in a slow window for both clients alike: per round the ratio holds still.
    rates = [(100.0, 100.0), (50.0, 50.0), (99.0, 100.0)]
    runs = [
        run
        for r, (ours, theirs) in enumerate(rates)
        for run in (_run(r, "cvserve", ours), _run(r, "perf_analyzer", theirs))
    ]
    (row,) = summarize_runs(runs, (4,), True, ["m"])
    assert row["ratio"] == pytest.approx(1.0)
    assert row["ratio_spread"] == pytest.approx(
        {"median": 1.0, "min": 0.99, "max": 1.0, "rounds": 3}
    )
    assert row["cvserve"]["min"] == 50.0 and row["cvserve"]["median"] == 99.0
    assert row["split_difference"] == 0.0 and row["split_agrees"]
    (alone,) = summarize_runs([r for r in runs if r["client"] == "cvserve"], (4,), False, ["m"])
    assert "ratio" not in alone


@pytest.mark.server
def test_both_clients_drive_the_ensemble_and_split_it_alike(
    triton: TritonServer, sample_images: dict[str, bytes], tmp_path: Path
) -> None:
    _perf_analyzer(tmp_path)
    images = [sample_images["640x480.jpeg"], sample_images["300x200.jpeg"]]
    report = bench_loadgen(
        triton.grpc_url,
        "classify",
        images,
        concurrency=(1, 2),
        rounds=2,
        duration_s=1.5,
        out=tmp_path / "loadgen.json",
    )
    assert json.loads((tmp_path / "loadgen.json").read_text())["summary"] == report["summary"]
    assert report["perf_analyzer"] == "used"
    runs = report["runs"]
    # Alternating: round 1 starts with cvserve, round 2 with perf_analyzer.
    assert [r["client"] for r in runs if r["round"] == 0][:2] == ["cvserve", "perf_analyzer"]
    assert [r["client"] for r in runs if r["round"] == 1][:2] == ["perf_analyzer", "cvserve"]
    composing = report["composing_models"]
    assert composing == ["classify_preprocess", "classify_dnn", "classify_postprocess"]
    for run in runs:
        assert run["images_per_s"] > 0 and run["p50_ms"] > 0, run
        # The server saw the run: every composing model answered requests meanwhile.
        assert all(run["models"][m]["requests"] > 0 for m in composing), run
        assert sum(split_shares(run["models"], composing).values()) == pytest.approx(1.0)
    for row in report["summary"]:
        pa, ours = row["perf_analyzer"], row["cvserve"]
        at = [r for r in runs if r["concurrency"] == row["concurrency"]]
        per_round = [
            a["images_per_s"] / b["images_per_s"]
            for a, b in zip(
                [r for r in at if r["client"] == "cvserve"],
                [r for r in at if r["client"] == "perf_analyzer"],
                strict=True,
            )
        ]
        assert row["ratio"] == pytest.approx(sum(per_round) / 2)  # the median of two rounds
        assert row["ratio_spread"]["rounds"] == 2
        assert pa["min"] <= pa["median"] <= pa["max"]
        assert 0.0 <= row["split_difference"] <= 1.0
        # End to end includes the server's compute: p50 over it is at least 1 (a median of runs).
        assert ours["p50_over_compute"] >= 1.0 and pa["p50_over_compute"] >= 1.0


def test_no_server_there_is_one_line() -> None:
    from cvserve.pipelines.app.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "loadgen", "--triton-url", "127.0.0.1:1", "--model", "x"])
    assert str(exc.value).startswith("cvserve bench loadgen: the server has no model 'x' ready")
    assert "\n" not in str(exc.value)
