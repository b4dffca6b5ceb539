"""The benchmark's plumbing (tiny images, no timing assertions) and the GPU check without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cvserve.pipelines.app.cli import build_parser
from cvserve.pipelines.app.preprocess_commands import cmd_bench_preprocess
from cvserve.preprocess.dali_graph import gpu_count
from cvserve.profiling.bench.gpu_check import EXIT_NO_GPU
from cvserve.profiling.bench.preprocess import (
    BackendConfig,
    Rate,
    Target,
    bench_preprocess,
    cpu_configs,
    side_by_side,
    target_result,
)


def test_bench_measures_every_cell_and_writes_json(tmp_path) -> None:
    configs = [
        BackendConfig("dali-cpu", "dali", 1),
        BackendConfig("dali-cpu-steps", "dali", 1, options={"step_times": True}),
        BackendConfig("opencv-loop", "opencv", 1),
        BackendConfig("opencv-reduced-loop", "opencv-reduced", 1),
    ]
    out = tmp_path / "bench.json"
    report = bench_preprocess(
        configs,
        sizes=[(64, 48), (1024, 1024)],
        batches=[1, 3],
        min_time_s=0.0,
        target=Target("dali-cpu", "opencv-loop", (64, 48), 3, 1.3),
        target_rounds=3,
        out=out,
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    cells = {(r["backend"], r["size"], r["batch"]) for r in report["results"]}
    assert len(cells) == 4 * 2 * 2
    assert all(r["images_per_s"] > 0 for r in report["results"])
    assert report["machine"]["cores"] == len(os.sched_getaffinity(0))
    assert set(report["filters"]) == {c.label for c in configs}
    assert report["jpeg_reduction"] == {"64x48": 1, "1024x1024": 2}
    target = report["target"]
    assert target["measured_ratio"] > 0 and target["table_ratio"] > 0
    assert isinstance(target["met"], bool)
    assert [r["round"] for r in target["rounds"]] == [1, 2, 3]
    assert target["ratio_spread"]["rounds"] == 3
    assert target["ratio_spread"]["min"] <= target["ratio_spread"]["max"]
    assert target["verdict"]["outcome"] in ("met", "not met", "undecided")


class Recorded:
    """A preprocessor that answers nothing and logs its name each time it runs a batch."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def __call__(self, batch):
        self.log.append(self.name)
        return []


def test_the_target_pair_alternates_which_runs_first() -> None:
    log: list[str] = []
    rounds = side_by_side(Recorded("dali", log), Recorded("opencv", log), [b""] * 2, 4, False)
    assert log == ["dali", "opencv", "opencv", "dali", "dali", "opencv", "opencv", "dali"]
    assert len(rounds) == 4 and all(a.images_per_s > 0 for a, _ in rounds)


def test_the_target_ratio_is_the_median_of_the_rounds_and_a_wide_spread_is_undecided() -> None:
    target = Target("dali-cpu", "opencv-loop", (1920, 1080), 32, 1.3)
    base = Rate(100.0, 10.0)
    quiet = [(Rate(100.0 * r, 5.0), base) for r in (1.60, 1.55, 1.62)]
    result = target_result(target, quiet)
    assert (result["measured_ratio"], result["met"]) == (1.6, True)
    assert result["verdict"]["outcome"] == "met"
    assert [r["ratio"] for r in result["rounds"]] == pytest.approx([1.60, 1.55, 1.62])
    # A noisy round (the baseline ran in a quiet window, DALI in a slow one) does not move the
    # median, but it widens the spread past the distance to 1.3: undecided, not a quiet pass.
    noisy = [*quiet, (Rate(90.0, 5.0), base), (Rate(161.0, 5.0), base)]
    result = target_result(target, noisy)
    assert result["measured_ratio"] == 1.6 and result["met"]
    assert result["ratio_spread"] == pytest.approx(
        {"median": 1.60, "min": 0.90, "max": 1.62, "rounds": 5}
    )
    assert result["verdict"]["outcome"] == "undecided"


def test_default_columns_include_reduced_decode_and_timed_dali() -> None:
    backends = {c.label: c.backend for c in cpu_configs(2)}
    assert backends["opencv-reduced-loop"] == backends["opencv-reduced-2t"] == "opencv-reduced"
    assert [c.options for c in cpu_configs(2) if c.label == "dali-cpu-steps"] == [
        {"step_times": True}
    ]


def test_cli_registers_bench_preprocess() -> None:
    args = build_parser().parse_args(
        ["bench", "preprocess", "--quick", "--sizes", "64x48", "--batches", "1", "2"]
    )
    assert args.func is cmd_bench_preprocess
    assert (args.sizes, args.batches, args.quick) == ([(64, 48)], [1, 2], True)


@pytest.mark.skipif(gpu_count() > 0, reason="a GPU is present: the check would run")
def test_gpu_check_without_a_gpu_exits_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cvserve.profiling.bench.gpu_check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_NO_GPU, result.stdout + result.stderr
    assert "no CUDA GPU" in result.stdout and "nothing checked" in result.stdout
