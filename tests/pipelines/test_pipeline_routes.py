"""The app resolves ``--pipeline NAME`` / ``--file F`` to the broker route it hands on; nothing is
registered in between (no broker, no server)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from cvserve.broker.routes import emit_result
from cvserve.pipelines.app.pipeline_args import catalog_route, file_route, pipeline_route
from cvserve.pipelines.pipeline_file import SHIPPED


def renamed(tmp_path: Path, shipped: str, name: str) -> Path:
    """A copy of a shipped pipeline file under another name."""
    path = tmp_path / f"{name}.yaml"
    shipped_data = yaml.safe_load((SHIPPED / shipped).read_text())
    path.write_text(yaml.safe_dump({**shipped_data, "name": name}))
    return path


def test_a_shipped_composite_routes_through_its_stages_and_fans_out_at_the_first() -> None:
    route = catalog_route("detect_identify")
    assert (route.pipeline, route.stage_names) == ("detect_identify", ["detect", "identify"])
    assert route.first.emit is not emit_result and route.stages[1].emit is emit_result
    assert catalog_route("classify").stage_names == ["classify"]


def test_a_files_route_is_the_files_own_and_leaves_no_trace_behind(tmp_path: Path) -> None:
    path = renamed(tmp_path, "detect_identify.yaml", "people")
    assert file_route(path).pipeline == "people"
    assert file_route(path).stage_names == ["detect", "identify"]
    # Nothing registered: the name alone still means a single ensemble of that name.
    assert catalog_route("people").stage_names == ["people"]
    single = file_route(renamed(tmp_path, "classify.yaml", "sorter"))
    assert (single.pipeline, single.stage_names) == ("sorter", ["sorter"])


def test_the_file_wins_over_the_name(tmp_path: Path) -> None:
    path = renamed(tmp_path, "detect_identify.yaml", "people")
    chosen = pipeline_route(argparse.Namespace(file=str(path), pipeline="classify"), "worker")
    assert chosen.pipeline == "people"
    by_name = pipeline_route(argparse.Namespace(file=None, pipeline="detect_identify"), "worker")
    assert by_name.stage_names == ["detect", "identify"]
