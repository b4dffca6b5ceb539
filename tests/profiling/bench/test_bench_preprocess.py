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
    Target,
    bench_preprocess,
    cpu_configs,
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
        target_rounds=1,
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
