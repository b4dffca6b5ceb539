"""The README's main job and the efficiency benchmark run end to end (not timed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvserve.pipelines.app.demo import run_demo
from cvserve.pipelines.app.pipeline_args import setting_overrides
from cvserve.pipelines.catalog import classify
from cvserve.profiling.bench.efficiency import bench_efficiency

pytestmark = [pytest.mark.server, pytest.mark.kafka]


def test_demo_answers_classify_and_detect_identify_then_stops_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(arch="mobilenet_v3_small", repeats=1, workdir=tmp_path) == 0
    out = capsys.readouterr().out
    assert "Answers (top-3)" in out and "3840x2160 jpeg" in out
    assert "classify_dnn" in out and "compute_infer" in out
    assert "detect_identify over Kafka" in out and "x 128-d" in out
    assert "Stopped the workers, Triton and Kafka." in out


def test_efficiency_benchmark_reports_the_three_rates_and_the_ratio(tmp_path: Path) -> None:
    spec = classify("mobilenet_v3_small", max_batch_size=2)
    report = bench_efficiency(spec, sizes=[(320, 240)], duration_s=0.5, out=tmp_path / "e.json")
    (row,) = json.loads((tmp_path / "e.json").read_text())["results"]
    assert row == report["results"][0]
    for key in ("preprocess_alone", "dnn_alone", "served", "limit", "serial_limit"):
        assert row[key] > 0, key
    for key in ("preprocess_cpu_ms", "dnn_cpu_ms", "client_cpu_ms"):
        assert row[key] > 0, key
    # CPU: what the cores allow at the CPU-seconds each image costs (the client's included).
    cpu_s = (row["preprocess_cpu_ms"] + row["dnn_cpu_ms"] + row["client_cpu_ms"]) / 1e3
    assert row["limit"] == pytest.approx(report["cores"] / cpu_s)
    assert row["ratio"] == pytest.approx(row["served"] / row["limit"])
    # The old serial composition, kept beside it.
    assert row["serial_limit"] < min(row["preprocess_alone"], row["dnn_alone"])
    assert row["serial_ratio"] == pytest.approx(row["served"] / row["serial_limit"])
    # Where the served CPU went: Triton itself and each stage's python-backend stub.
    parts = row["served_cpu_ms"]
    for part in ("tritonserver", "stub:classify_preprocess", "stub:classify_dnn", "client"):
        assert parts[part] > 0, (part, parts)


def test_efficiency_with_a_baseline_engine_serves_both_in_one_run(tmp_path: Path) -> None:
    spec = classify("mobilenet_v3_small", max_batch_size=2, engine="onnxruntime")
    baseline = classify("mobilenet_v3_small", max_batch_size=2, engine="torch", name="base")
    report = bench_efficiency(
        spec, sizes=[(320, 240)], duration_s=0.5, out=tmp_path / "e.json", baseline=baseline
    )
    (row,) = report["results"]
    assert (report["engine"], report["baseline_engine"]) == ("onnxruntime", "torch")
    assert row["baseline"]["served"] > 0 and row["baseline"]["dnn_alone"] > 0
    assert row["served_speedup"] == pytest.approx(row["served"] / row["baseline"]["served"])
    # The baseline's limit is computed with its own DNN cost.
    assert row["baseline"]["dnn_cpu_ms"] != row["dnn_cpu_ms"]


def test_efficiency_of_a_fused_pipeline_beside_its_ensemble(tmp_path: Path) -> None:
    spec = classify("mobilenet_v3_small", max_batch_size=2, fuse_stages=True)
    baseline = classify("mobilenet_v3_small", max_batch_size=2, name="apart")
    report = bench_efficiency(spec, sizes=[(320, 240)], duration_s=0.5, baseline=baseline)
    (row,) = report["results"]
    assert report["fused"] and not report["baseline_fused"]
    # The stages alone are measured apart; served, the CPU is the fused model's.
    assert row["preprocess_alone"] > 0 and row["dnn_alone"] > 0
    assert row["served_cpu_ms"]["stub:classify_fused"] > 0
    assert "stub:classify_preprocess" not in row["served_cpu_ms"]
    assert row["served_speedup"] == pytest.approx(row["served"] / row["baseline"]["served"])


def test_baseline_settings_are_parsed_and_a_bad_one_is_one_line() -> None:
    overrides = setting_overrides(
        ["fuse_stages=false", "dali_threads=2", "engine=torch", "preferred_batch_sizes=4,8"],
        "bench efficiency --baseline",
    )
    assert overrides == {
        "fuse_stages": False,
        "dali_threads": 2,
        "engine": "torch",
        "preferred_batch_sizes": (4, 8),
    }
    with pytest.raises(SystemExit, match="'arch=resnet50': give SETTING=VALUE"):
        setting_overrides(["arch=resnet50"], "bench efficiency --baseline")
