"""On a GPU (issue 29's GPU targets): `cvserve profile --preprocess server-gpu` attributes every
request of a pipeline served on the GPU — its stages apart, each reporting its own work (CUDA
events, `models.part_times`), and fused, its model reporting its parts — with the categories
summing to end-to-end within 5 %. Skipped without a CUDA GPU; ../shared/gpu/run.sh runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvserve.deploy.host import cuda_available
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.variants import FUSED_PARTS
from cvserve.profiling.categories import CATEGORIES, HANDOFF

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.server,
    pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU"),
]

NAME = "gpuprof"
STAGE_OF = {"preprocess": "preprocess", "inference": "dnn", "postprocess": "postprocess"}


def _file(folder: Path, fused: bool) -> Path:
    path = folder / f"{NAME}.yaml"
    path.write_text(
        f"name: {NAME}\nmodel:\n  arch: mobilenet_v3_small\npostprocess:\n  kind: classification\n"
        f"serving:\n  engine: torch\n  max_batch_size: 4\n  fuse_stages: {str(fused).lower()}\n"
    )
    return path


@pytest.mark.parametrize("fused", [False, True], ids=["apart", "fused"])
def test_a_pipeline_served_on_the_gpu_is_split_as_it_runs(fused: bool, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    argv = ["profile", "--file", str(_file(tmp_path, fused)), "--preprocess", "server-gpu"]
    argv += ["--sizes", "640x480", "--concurrency", "2", "--duration", "1"]
    argv += ["--images-per-size", "2", "--split-preprocess", "--out", str(out)]
    assert main(argv) == 0
    (run,) = out.iterdir()
    rows = [r for r in json.loads((run / "requests.json").read_text()) if r["triton_traced"]]
    assert rows
    if fused:
        parts = [f"{NAME}_fused.{part}" for part in FUSED_PARTS]
        handoffs = [f"{NAME}_fused.{HANDOFF}"]
    else:
        parts = [f"{NAME}_{STAGE_OF[part]}.{part}" for part in FUSED_PARTS]
        handoffs = [f"{NAME}_{STAGE_OF[part]}.{HANDOFF}" for part in FUSED_PARTS]
    for row in rows:
        spans = row["spans_ms"]
        assert all(spans.get(s, 0.0) > 0 for s in parts), spans  # CUDA-event times, every part
        assert any(spans.get(s, 0.0) > 0 for s in handoffs), spans
        total = sum(row[f"{c}_ms"] for c in CATEGORIES)
        assert abs(total - row["end_to_end_ms"]) <= 0.05 * row["end_to_end_ms"], row
