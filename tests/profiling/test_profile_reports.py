"""A run folder from known requests: files parse, plots decode, the trace is Chrome JSON, and
compare / advice quote the numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from cvserve.pipelines.app.cli import main
from cvserve.profiling.advice import REMEDY, placement_advice, remedy
from cvserve.profiling.attribution import attribute
from cvserve.profiling.categories import CATEGORIES
from cvserve.profiling.compare import compare_points, load_summary
from cvserve.profiling.plots import write_plots
from cvserve.profiling.report import (
    CHROME_TRACE,
    REQUEST_COLUMNS,
    REQUESTS_CSV,
    REQUESTS_JSON,
    summary_table,
    write_run,
)
from cvserve.profiling.sweep_plan import Point, SweepConfig
from cvserve.profiling.sweep_results import PointResult, RequestRecord, SweepRun
from cvserve.profiling.trace import Trace

MS = 1_000_000
REQUESTS = 10


def known_point(placement: str, concurrency: int, pre_ms: int, infer_ms: int) -> PointResult:
    """``REQUESTS`` requests of read 1 ms, preprocessing, inference, receive 1 ms."""
    records = []
    for i in range(REQUESTS):
        trace = Trace(f"{placement}-{concurrency}-{i}").begin(i * 100 * MS)
        t = trace.start_ns
        trace.add("read", t, t + MS)
        if placement == "client-cpu":
            trace.add("decode", t + MS, t + (1 + pre_ms) * MS)
            server = trace.add("overhead", t + (1 + pre_ms) * MS, t + (1 + pre_ms + infer_ms) * MS)
        else:
            server = trace.add("overhead", t + MS, t + (1 + pre_ms + infer_ms) * MS)
            trace.add(
                "compute_infer",
                t + MS,
                t + (1 + pre_ms) * MS,
                parent=server,
                process="triton",
                role="preprocess",
            )
        trace.add(
            "compute_infer",
            t + (1 + pre_ms) * MS,
            server.end_ns,
            parent=server,
            process="triton",
            role="inference",
        )
        trace.add("receive", server.end_ns, server.end_ns + MS)
        trace.finish(server.end_ns + MS)
        trace.attributes["request_bytes"] = 600_000 if placement == "client-cpu" else 80_000
        records.append(RequestRecord(trace, attribute(trace), True, 0))
    wall = REQUESTS * (2 + pre_ms + infer_ms) / 1000 / concurrency
    return PointResult(
        Point(placement, 640, 480, concurrency), records, wall, 0, "classify", {}, {}, 0
    )


def known_run(infer_ms: int = 20) -> SweepRun:
    config = SweepConfig(
        placements=("client-cpu", "server-cpu"), sizes=((640, 480),), concurrency=(1, 4)
    )
    run = SweepRun("classify", config, skipped=["server-gpu skipped: no CUDA GPU"])
    run.results = [
        known_point("client-cpu", 1, 10, infer_ms),
        known_point("client-cpu", 4, 10, infer_ms),
        known_point("server-cpu", 1, 5, infer_ms),
        known_point("server-cpu", 4, 5, infer_ms),
    ]
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("profile") / "run"
    write_plots(write_run(folder, known_run()), folder)
    return folder


def test_requests_csv_and_json_have_one_row_per_request_that_adds_up(run_dir: Path) -> None:
    with (run_dir / REQUESTS_CSV).open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == REQUEST_COLUMNS
        rows = list(reader)
    assert len(rows) == 4 * REQUESTS
    for row in rows:
        total = sum(float(row[f"{c}_ms"]) for c in CATEGORIES)
        assert total == pytest.approx(float(row["end_to_end_ms"]), abs=1e-3)
    as_json = json.loads((run_dir / REQUESTS_JSON).read_text())
    assert [r["request_id"] for r in as_json] == [r["request_id"] for r in rows]
    assert as_json[0]["spans_ms"]["decode"] == pytest.approx(10.0)


def test_summary_json_holds_points_clocks_and_advice(run_dir: Path) -> None:
    summary = load_summary(run_dir)
    assert summary["categories"] == list(CATEGORIES)
    assert len(summary["points"]) == 4
    server = summary["points"][2]
    assert server["categories"]["preprocessing"]["mean_ms"] == pytest.approx(5.0)
    assert server["categories"]["inference"]["mean_ms"] == pytest.approx(20.0)
    assert "max_triton_skew_us" in summary["clocks"]
    assert summary["skipped"] == ["server-gpu skipped: no CUDA GPU"]
    assert summary["advice"]


def test_plots_are_decodable_pngs(run_dir: Path) -> None:
    for name in ("shares.png", "concurrency.png"):
        with Image.open(run_dir / name) as image:
            assert image.format == "PNG"
            image.load()
            assert image.width > 300 and image.height > 200


def test_trace_is_chrome_trace_json_with_nested_complete_events(run_dir: Path) -> None:
    document = json.loads((run_dir / CHROME_TRACE).read_text())
    events = document["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert set(processes.values()) == {"client", "triton"}
    complete = [e for e in events if e["ph"] == "X"]
    assert complete and all(e["pid"] in processes for e in complete)
    for event in complete:
        assert isinstance(event["ts"], float | int) and event["dur"] >= 0
        assert {"name", "cat", "tid", "args"} <= set(event)
    roots = {(e["tid"]): e for e in complete if e["name"] == "request"}
    for event in complete:  # every span lies inside its request's root span
        root = roots[event["tid"]]
        assert (
            root["ts"] <= event["ts"]
            and event["ts"] + event["dur"] <= root["ts"] + root["dur"] + 1e-6
        )


def test_table_shows_every_point(run_dir: Path) -> None:
    console = Console(record=True, width=160)
    console.print(summary_table(load_summary(run_dir)))
    text = console.export_text()
    assert text.count("client-cpu") == 2 and text.count("server-cpu") == 2


def test_advice_names_the_faster_placement_with_its_numbers(run_dir: Path) -> None:
    summary = load_summary(run_dir)
    (line,) = placement_advice(summary)
    faster = max(summary["points"], key=lambda p: p["images_per_s"])
    assert faster["placement"] == "server-cpu"
    assert "classify 640x480: preprocess on the server's CPU (server-cpu)" in line
    assert f"{faster['images_per_s']:.1f}" in line
    assert "request 78 KB vs 586 KB" in line


def test_compare_gives_b_over_a_per_category_and_throughput(tmp_path: Path, run_dir: Path) -> None:
    slower = write_run(tmp_path / "slower", known_run(infer_ms=40))
    rows = compare_points(load_summary(run_dir), slower)
    assert len(rows) == 4
    server = rows[2]
    assert server["inference"]["ratio"] == pytest.approx(2.0)
    assert server["preprocessing"]["ratio"] == pytest.approx(1.0)
    assert server["throughput"]["ratio"] == pytest.approx(27 / 47, rel=1e-3)
    assert server["queueing"]["ratio"] is None  # nothing queued in A: no ratio


def test_compare_command_prints_the_ratios(tmp_path: Path, run_dir: Path, capsys) -> None:
    write_run(tmp_path / "slower", known_run(infer_ms=40))
    assert main(["profile", "compare", str(run_dir), str(tmp_path / "slower")]) == 0
    out = capsys.readouterr().out
    assert "×2.00" in out
    assert main(["profile", "compare", str(run_dir), str(tmp_path / "missing")]) == 2


def test_advice_falls_back_to_latency_when_throughput_ties(run_dir: Path) -> None:
    summary = load_summary(run_dir)
    for point in summary["points"]:
        point["images_per_s"] = 100.0  # a tie at every concurrency
    (line,) = placement_advice(summary)
    assert "server-cpu): same throughput within 5 %" in line
    assert "lower p50 when idle" in line


def test_the_share_outside_the_dnn_per_placement_and_size_with_what_to_change(
    run_dir: Path,
) -> None:
    summary = load_summary(run_dir)
    lines = summary["outside_dnn"]
    assert [line.split(":")[0] for line in lines] == ["client-cpu 640x480", "server-cpu 640x480"]
    for line, point in zip(lines, summary["points"][::2], strict=True):
        share = 1 - point["categories"]["inference"]["share"]
        assert f"{share:.0%} of end-to-end outside the DNN at concurrency 1" in line
    slow = write_run(run_dir.parent / "slow-dnn", known_run(infer_ms=400))
    assert all(line.endswith("the DNN leads") for line in slow["outside_dnn"])
    light = write_run(run_dir.parent / "light-dnn", known_run(infer_ms=1))
    client = light["outside_dnn"][0]
    assert "most in preprocessing" in client and REMEDY["preprocessing"] in client


def test_the_remedy_does_not_ask_a_fused_pipeline_to_fuse_and_names_the_broker() -> None:
    apart = {"triton_vs_stats": {"classify_preprocess": {}, "classify_dnn": {}}}
    fused = {"triton_vs_stats": {"classify_fused": {}}}
    for category in ("data_movement", "postprocessing", "other"):
        assert "fuse" in remedy(apart, category) and "fuse" not in remedy(fused, category)
    assert remedy(fused, "preprocessing") == REMEDY["preprocessing"]
    assert "broker" in remedy({**fused, "transport": "kafka"}, "data_movement")
