"""`cvserve bench engines`: one row per engine, and `--store` feeds the measured choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvserve.deploy import measurements
from cvserve.models.engine_choice import stage_choice
from cvserve.pipelines.catalog import classify
from cvserve.profiling.bench.engines import bench_engines


def test_every_engine_is_a_row_and_the_run_is_what_stages_choose_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(measurements.STORE_ENV, str(tmp_path / "store"))
    spec = classify("mobilenet_v3_small", max_batch_size=1, torch_threads=1)
    report = bench_engines(
        [spec], batches=(1,), duration_s=0.1, out=tmp_path / "e.json", store=True
    )
    rows = report["results"]
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
