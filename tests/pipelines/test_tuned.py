"""Tuned settings: written into a pipeline file (comments kept) and read back; stored for a
shipped pipeline and served with unless a command line or the file says otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvserve.broker.routes import composite_route
from cvserve.broker.worker_processes import StageWorkerProcesses
from cvserve.deploy import measurements
from cvserve.models.params import DnnParams
from cvserve.pipelines.app.manifests.compose import compose_document
from cvserve.pipelines.app.manifests.plan import plan_deployment
from cvserve.pipelines.catalog import composite_of, pipeline, shipped_tuned_key
from cvserve.pipelines.pipeline_file import PipelineFileError, load_file
from cvserve.pipelines.tuned import (
    stage_settings_key,
    store_settings,
    store_stage_settings,
    stored_settings,
    write_serving,
    write_stage_settings,
)
from cvserve.preprocess.spec import PreprocessParams

FILE = """\
# my classifier: this comment stays
name: mine
model:
  arch: mobilenet_v3_small   # small and fast
postprocess:
  kind: classification
  top_k: 3
serving:
  max_queue_delay_us: 2000
  preferred_batch_sizes: [4]
"""

SETTINGS = {
    "engine": "onnxruntime",
    "precision": "fp32",
    "max_batch_size": 4,
    "max_queue_delay_us": 0,
    "preferred_batch_sizes": (),
    "instances": 2,
    "dali_threads": 1,
    "torch_threads": 1,
}


@pytest.fixture(autouse=True)
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(measurements.STORE_ENV, str(tmp_path / "store"))


def test_settings_written_into_a_file_round_trip_and_keep_its_comments(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(FILE)
    write_serving(path, SETTINGS)
    text = path.read_text()
    assert "# my classifier: this comment stays" in text and "# small and fast" in text
    assert "preferred_batch_sizes" not in text  # none chosen: the file no longer says any
    serving = load_file(path).serving
    for key, value in SETTINGS.items():
        if key != "preferred_batch_sizes":
            assert getattr(serving, key) == value, key
    assert load_file(path).postprocess.options["top_k"] == 3
    write_serving(path, {**SETTINGS, "preferred_batch_sizes": (4,)})
    assert load_file(path).serving.preferred_batch_sizes == (4,)


def test_a_file_without_serving_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "bare.yaml"
    path.write_text(FILE.split("serving:")[0])
    write_serving(path, SETTINGS)
    assert load_file(path).serving.instances == 2


def test_preferred_sizes_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(FILE.replace("[4]", "[0]"))
    with pytest.raises(PipelineFileError, match="serving.preferred_batch_sizes"):
        load_file(path)


def test_a_tuned_shipped_pipeline_serves_with_its_settings_unless_told_otherwise() -> None:
    key = shipped_tuned_key("classify", arch="mobilenet_v3_small")
    assert stored_settings(key) == {}
    store_settings(key, {**SETTINGS, "preferred_batch_sizes": (2, 4)})
    spec = pipeline("classify", arch="mobilenet_v3_small")
    dnn = spec.stage_by_role("inference")
    assert dnn.params_as(DnnParams).engine == "onnxruntime" and dnn.instances == 2
    assert dnn.batching.max_batch_size == 4 and dnn.batching.preferred_batch_sizes == (2, 4)
    assert spec.stage_by_role("preprocess").params_as(PreprocessParams).num_threads == 1
    # The command line wins; another network is not tuned.
    told = pipeline("classify", arch="mobilenet_v3_small", instances=1, engine="torch")
    assert told.stage_by_role("inference").instances == 1
    assert told.stage_by_role("inference").params_as(DnnParams).engine == "torch"
    other = pipeline("classify", arch="resnet18")
    assert other.stage_by_role("inference").params_as(DnnParams).engine is None


COMPOSITE = """\
# two stages: this comment stays
name: pair
composite:
  - pipeline: detect   # the detector
    fan_out: {score_threshold: 0.0}
  - pipeline: identify
"""


def test_stage_workers_and_rates_written_into_a_composite_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pair.yaml"
    path.write_text(COMPOSITE)
    chosen = {"detect": {"workers": 1, "rate": 9.5}, "identify": {"workers": 3, "rate": 21.0}}
    write_stage_settings(path, chosen)
    text = path.read_text()
    assert "# two stages: this comment stays" in text and "# the detector" in text
    parts = load_file(path).parts
    assert [(p.workers, p.rate) for p in parts] == [(1, 9.5), (3, 21.0)]
    # What every view then reads: the route (workers started per stage), the deploy plan.
    route = composite_route(composite_of(load_file(path)))
    assert [(s.name, s.workers, s.rate) for s in route.stages] == [
        ("detect", 1, 9.5),
        ("identify", 3, 21.0),
    ]
    workers = StageWorkerProcesses("b", route, "t", "ns", tmp_path)
    assert [workers.count(s) for s in route.stages] == [1, 3]
    told = StageWorkerProcesses("b", route, "t", "ns", tmp_path, per_stage={"detect": 2})
    assert [told.count(s) for s in route.stages] == [2, 3]
    plan = plan_deployment(path)
    assert [(s.rate, s.workers) for s in plan.stages] == [(9.5, 1), (21.0, 3)]
    replicas = {
        name: service["deploy"]["replicas"]
        for name, service in compose_document(plan)["services"].items()
        if name.startswith("worker-")
    }
    assert replicas == {"worker-detect": 1, "worker-identify": 3}


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("workers: 0", "workers: expected a positive integer"),
        ("rate: -1", "rate: expected a number > 0"),
        ("rate: fast", "rate: expected a number > 0"),
    ],
)
def test_stage_workers_and_rates_are_checked(tmp_path: Path, entry: str, error: str) -> None:
    path = tmp_path / "pair.yaml"
    path.write_text(COMPOSITE + f"    {entry}\n")
    with pytest.raises(PipelineFileError, match=error):
        load_file(path)


def test_a_tuned_shipped_composite_starts_its_stored_workers() -> None:
    from cvserve.pipelines import catalog

    key = stage_settings_key("detect_identify")
    store_stage_settings(key, {"identify": {"workers": 2, "rate": 12.0}})
    try:
        stages = catalog.shipped_composites(catalog.this_machine())["detect_identify"].stages
        assert [(s.workers, s.rate) for s in stages] == [(1, None), (2, 12.0)]
        composite, _ = catalog.resolve(
            catalog.shipped("detect_identify"), catalog.this_machine(), shipped_as="detect_identify"
        )
        assert composite is not None and composite.stages == stages
    finally:  # the store is the session's: later CLI processes must not start 2 workers
        store_stage_settings(key, {})
