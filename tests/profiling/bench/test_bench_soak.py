"""`cvserve bench soak` on the session's Kafka and Triton, for seconds: every process sampled each
second, nothing lost, the lag drained, the report's figures consistent (not their values: a
slope over seconds says nothing about a leak)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.triton import TritonServer
from cvserve.profiling.bench.soak import slope_mb_per_min, soak

pytestmark = [pytest.mark.kafka, pytest.mark.server]


def test_slope_is_mb_per_minute() -> None:
    assert slope_mb_per_min([0, 30, 60, 90], [100, 101, 102, 103]) == pytest.approx(2.0)
    assert slope_mb_per_min([5], [100]) == 0.0


def test_short_soak_loses_nothing_and_samples_every_process(
    kafka: KafkaBroker, triton: TritonServer, tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    watch = {"kafka": kafka.process.pid, "triton": triton.process.pid}  # type: ignore[union-attr]
    report = soak(
        pipeline="detect_identify", minutes=0.25, rate=2.0, size=(160, 120),
        bootstrap=kafka.bootstrap, triton_url=triton.grpc_url, watch=watch, out=out,
    )  # fmt: skip
    assert report["submitted"] >= 25 and report["lost"] == 0 and report["submit_errors"] == 0
    assert report["completed"] == report["submitted"] and report["lag_final"] == 0
    names = {row["process"] for row in report["processes"]}
    assert {"kafka", "tritonserver", "client"} <= names
    assert {"worker:detect-0", "worker:identify-0"} <= names
    assert any(name.startswith("stub:detect") for name in names)  # Triton's stubs by model
    for row in report["processes"]:
        assert row["samples"] >= 12  # about one a second for 15 s
        assert 0 < row["rss_warm_mb"] <= row["rss_peak_mb"]
    assert len(report["lag_samples"]) >= 12
    assert json.loads(out.read_text())["completed"] == report["completed"]
