"""`cvserve tune` on a composite file: real workers across a real Kafka and Triton, trials that
measured every stage, and the choice written into the file for the workers and the deploy files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cvserve.pipelines.app.cli import main
from cvserve.pipelines.pipeline_file import load_file
from cvserve.profiling.tune import MARGIN

COMPOSITE = """\
# detector → crops → embeddings; cvserve tune writes workers and rates below
name: tuned_pair
composite:
  - pipeline: detect
    fan_out: {score_threshold: 0.0}
  - pipeline: identify
"""


@pytest.mark.server
def test_tune_chooses_workers_per_stage_and_writes_them_into_the_composite(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pair.yaml"
    path.write_text(COMPOSITE)
    report_path = tmp_path / "tune.json"
    args = ["tune", "--file", str(path), "--score-threshold", "0", "--max-detections", "2"]
    args += ["--duration", "3", "--concurrency", "4", "--max-trials", "2", "--max-workers", "2"]
    args += ["--size", "320x240", "--out", str(report_path)]
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    trials = report["trials"]
    assert len(trials) == 2 and trials[0]["workers"] == {"detect": 1, "identify": 1}
    # The second trial added a worker to the stage the first found busiest.
    first = {s["stage"]: s for s in trials[0]["stages"]}
    busiest = max(first, key=lambda s: first[s]["busy"])
    assert trials[1]["workers"][busiest] == 2
    for t in trials:
        assert t["errors"] == 0 and t["incomplete"] == 0 and t["images_per_s"] > 0, t
        assert t["crops_per_s"] > 0, "the detector fanned out no crops"
        for stage in t["stages"]:
            assert stage["records"] > 0 and 0 < stage["busy"] <= 1 and stage["rate"] > 0, stage
    (chosen,) = [t for t in trials if t["chosen"]]
    for t in trials:
        assert t["images_per_s"] <= chosen["images_per_s"] * (1 + MARGIN) + 1e-9, t
    # Written into the file (comment kept), as the report says; deploy compose starts as many.
    assert "# detector → crops" in path.read_text()
    parts = {p.pipeline.name: p for p in load_file(path).parts}
    for stage in chosen["stages"]:
        part = parts[stage["stage"]]
        assert part.workers == stage["workers"] == chosen["workers"][stage["stage"]]
        assert part.rate == pytest.approx(stage["rate"], abs=0.05)
    assert main(["deploy", "compose", "--file", str(path), "--out", str(tmp_path / "c")]) == 0
    compose = yaml.safe_load((tmp_path / "c" / "compose.yaml").read_text())
    replicas = {
        name.removeprefix("worker-"): service["deploy"]["replicas"]
        for name, service in compose["services"].items()
        if name.startswith("worker-")
    }
    assert replicas == chosen["workers"]
