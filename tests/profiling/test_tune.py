"""`cvserve tune` on a pipeline file: real short runs on a real Triton, the chosen settings
written into the file, and what `repo build` then writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvserve.models.repository.config import read_config
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.pipeline_file import load_file
from cvserve.profiling.tune import MARGIN, Goal, Trial, report_tuning, thread_splits

FILE = """\
# tuned by the test
name: tuned
model:
  arch: mobilenet_v3_small
postprocess:
  kind: classification
  top_k: 3
serving:
  max_batch_size: 4
  max_queue_delay_us: 2000
"""


def test_thread_splits_try_each_stage_alone_on_every_core() -> None:
    # (DALI, engine): a light DNN is served best with every core to DALI and one to the engine.
    assert set(thread_splits(2)) == {(2, 2), (1, 1), (1, 2), (2, 1)}
    assert {(16, 1), (1, 16), (8, 8), (16, 16)} == set(thread_splits(16))
    assert thread_splits(1) == ((1, 1),)


def test_the_table_names_a_reduced_precision_beside_its_engine(tmp_path: Path, capsys) -> None:
    base = {
        "engine": "openvino", "precision": "bf16", "max_batch_size": 8, "max_queue_delay_us": 0,
        "preferred_batch_sizes": (), "instances": 1, "dali_threads": 2, "torch_threads": 2,
        "fuse_stages": False,
    }  # fmt: skip
    trials = [
        Trial(base, "baseline", 107.0, 214.7, 329.7, 0, True, 107.0),
        Trial({**base, "precision": "fp32"}, "engine", 30.5, 762.4, 1026.5, 0, True, 30.5),
    ]
    report_tuning("classify", Goal(), base, trials, (640, 480), 4.0, "-", tmp_path / "t.json")
    rows = [line for line in capsys.readouterr().out.splitlines() if "img" not in line]
    assert any("openvino bf16" in r and "107.0" in r for r in rows)
    assert any("openvino " in r and "bf16" not in r and "30.5" in r for r in rows)


def test_a_goal_without_what_it_needs_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(FILE)
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--file", str(path), "--goal", "latency"])
    assert str(exc.value) == "cvserve tune: the latency goal needs a rate (images/s)"


@pytest.mark.server
def test_tune_writes_its_choice_into_the_file_and_repo_build_serves_it(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    path.write_text(FILE)
    report_path = tmp_path / "tune.json"
    args = ["tune", "--file", str(path), "--duration", "1", "--concurrency", "2"]
    args += ["--engines", "torch,onnxruntime", "--splits", "1:1", "--batches", "2"]
    args += ["--delays", "0", "--instances-to-try", "1", "--out", str(report_path)]
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    trials = report["trials"]
    axes = [t["axis"] for t in trials]
    assert axes[0] == "baseline" and {"engine", "fuse_stages", "max_batch_size"} <= set(axes)
    # Fused (one model, an instance per core) was served and measured too.
    assert any(t["settings"]["fuse_stages"] for t in trials if t["axis"] == "fuse_stages")
    for t in trials:
        assert t["errors"] == 0 and t["images_per_s"] > 0, t
    (chosen,) = [t for t in trials if t["chosen"]]
    assert chosen["settings"] == report["chosen"]
    # No trial beat the chosen one by more than the margin (else it would have been chosen).
    for t in trials:
        assert t["images_per_s"] <= chosen["images_per_s"] * (1 + MARGIN) + 1e-9, t
    # Written into the file, the comment kept; then what repo build writes.
    assert "# tuned by the test" in path.read_text()
    serving = load_file(path).serving
    want = report["chosen"]
    for key in ("engine", "max_batch_size", "max_queue_delay_us", "instances"):
        assert getattr(serving, key) == want[key], key
    assert (serving.dali_threads, serving.torch_threads) == (
        want["dali_threads"],
        want["torch_threads"],
    )
    assert serving.fuse_stages == want["fuse_stages"]
    repo = tmp_path / "repo"
    assert main(["repo", "build", "--file", str(path), "--out", str(repo)]) == 0
    if want["fuse_stages"]:  # one model, holding both stages' params
        dnn = read_config(repo / "tuned_fused" / "config.pbtxt")
        both = json.loads(dnn.parameters["cvserve_stage"].string_value)
        stage, pre_params = both["dnn"], both["preprocess"]
        assert not (repo / "tuned_preprocess").exists()
    else:
        dnn = read_config(repo / "tuned_dnn" / "config.pbtxt")
        stage = json.loads(dnn.parameters["cvserve_stage"].string_value)
        pre = read_config(repo / "tuned_preprocess" / "config.pbtxt")
        pre_params = json.loads(pre.parameters["cvserve_stage"].string_value)
    assert stage["engine"] == want["engine"] and stage["torch_threads"] == want["torch_threads"]
    assert dnn.max_batch_size == want["max_batch_size"]
    assert dnn.dynamic_batching.max_queue_delay_microseconds == want["max_queue_delay_us"]
    assert dnn.instance_group[0].count == want["instances"]
    assert pre_params["num_threads"] == want["dali_threads"]
