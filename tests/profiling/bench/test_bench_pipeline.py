"""`cvserve bench <task>` against a served pipeline: its JSON names the task it measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvserve.deploy.triton import TritonServer
from cvserve.profiling.bench.pipeline import bench_pipeline

pytestmark = pytest.mark.server


@pytest.mark.parametrize("task", ["identify", "classify"])
def test_bench_report_is_labelled_with_its_task(
    task: str, triton: TritonServer, tmp_path: Path
) -> None:
    out = tmp_path / f"bench-{task}.json"
    arch = {"classify": "mobilenet_v3_small", "identify": None}[task]
    report = bench_pipeline(
        task,
        arch=arch,
        sizes=((96, 64),),
        concurrency=(1,),
        sequential_requests=2,
        duration_s=0.3,
        out=out,
        triton_url=triton.grpc_url,
    )
    written = json.loads(out.read_text())
    assert written["benchmark"] == report["benchmark"] == task
    assert written["pipeline"] == task
    assert {row["mode"] for row in written["results"]} == {"sequential", "closed-loop"}
    assert all(row["errors"] == 0 for row in written["results"])
