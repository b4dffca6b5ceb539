"""On a GPU (issue 29's GPU targets): `cvserve profile --preprocess server-gpu` attributes every
request of a pipeline served on the GPU — its stages apart, each reporting its own work (CUDA
events, `models.part_times`), and fused, its model reporting its parts and its answers' copy to
the host; `--preprocess client-cpu`'s pixels copied onto the DNN's GPU — with the categories
summing to end-to-end within 5 %. Skipped without a CUDA GPU; ../shared/gpu/run.sh runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvserve.deploy.host import cuda_available
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.variants import FUSED_PARTS, TO_DEVICE, TO_HOST
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


@pytest.mark.parametrize(
    ("placement", "fused"),
    [("server-gpu", False), ("server-gpu", True), ("client-cpu", False)],
    ids=["apart", "fused", "client-preprocessed"],
)
def test_a_pipeline_served_on_the_gpu_is_split_as_it_runs(
    placement: str, fused: bool, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    argv = ["profile", "--file", str(_file(tmp_path, fused)), "--preprocess", placement]
    argv += ["--sizes", "640x480", "--concurrency", "2", "--duration", "1"]
    argv += ["--images-per-size", "2", "--split-preprocess", "--out", str(out)]
    assert main(argv) == 0
    (run,) = out.iterdir()
    rows = [r for r in json.loads((run / "requests.json").read_text()) if r["triton_traced"]]
    assert rows
    if fused:  # the answers' copy to the host, CUDA events around it
        parts = [*(f"{NAME}_fused.{part}" for part in FUSED_PARTS), f"{NAME}_fused.{TO_HOST}"]
        handoffs = [f"{NAME}_fused.{HANDOFF}"]
    elif placement == "client-cpu":  # the client's pixels copied onto the DNN's GPU
        roles = ("inference", "postprocess")
        parts = [f"{NAME}_{STAGE_OF[r]}.{r}" for r in roles] + [f"{NAME}_dnn.{TO_DEVICE}"]
        handoffs = [f"{NAME}_{STAGE_OF[r]}.{HANDOFF}" for r in roles]
    else:
        parts = [f"{NAME}_{STAGE_OF[part]}.{part}" for part in FUSED_PARTS]
        handoffs = [f"{NAME}_{STAGE_OF[part]}.{HANDOFF}" for part in FUSED_PARTS]
    for row in rows:
        spans = row["spans_ms"]
        assert all(spans.get(s, 0.0) > 0 for s in parts), spans  # CUDA-event times, every part
        assert any(spans.get(s, 0.0) > 0 for s in handoffs), spans
        total = sum(row[f"{c}_ms"] for c in CATEGORIES)
        assert abs(total - row["end_to_end_ms"]) <= 0.05 * row["end_to_end_ms"], row
