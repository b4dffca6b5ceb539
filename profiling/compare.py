"""``cvserve profile compare RUN_A RUN_B``: per point, B / A for throughput and each category's
mean time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from cvserve.profiling.attribution import END_TO_END
from cvserve.profiling.categories import CATEGORIES
from cvserve.profiling.report import SUMMARY
from cvserve.profiling.tables import field, results_table


class RunNotFound(FileNotFoundError):
    """A path that is not a profile run folder (no summary.json)."""


def load_summary(run: Path) -> dict[str, Any]:
    path = Path(run) / SUMMARY if Path(run).is_dir() else Path(run)
    if not path.is_file():
        raise RunNotFound(f"{run}: no {SUMMARY} (not a cvserve profile run folder)")
    return json.loads(path.read_text())


def _key(point: dict[str, Any]) -> tuple[str, str, int]:
    return (point["placement"], point["size"], point["concurrency"])


def _ratio(b: float, a: float) -> float | None:
    return b / a if a else None


def compare_points(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per point present in both runs: A's and B's values and B / A."""
    theirs = {_key(p): p for p in b["points"] if p["categories"]}
    rows = []
    for point in a["points"]:
        other = theirs.get(_key(point))
        if other is None or not point["categories"]:
            continue
        row: dict[str, Any] = {
            "placement": point["placement"],
            "size": point["size"],
            "concurrency": point["concurrency"],
            "throughput": {
                "a": point["images_per_s"],
                "b": other["images_per_s"],
                "ratio": _ratio(other["images_per_s"], point["images_per_s"]),
            },
        }
        for category in (*CATEGORIES, END_TO_END):
            mean_a = point["categories"][category]["mean_ms"]
            mean_b = other["categories"][category]["mean_ms"]
            row[category] = {"a": mean_a, "b": mean_b, "ratio": _ratio(mean_b, mean_a)}
        rows.append(row)
    return rows


def _fmt(ratio: float | None) -> str:
    return "—" if ratio is None else f"×{ratio:.2f}"


def comparison_table(rows: list[dict[str, Any]], name_a: str, name_b: str) -> Table:
    columns = {
        "placement": field("placement"),
        "size": field("size"),
        "conc": field("concurrency"),
        "throughput": lambda r: f"{_fmt(r['throughput']['ratio'])} ({r['throughput']['b']:.1f})",
    }
    for name in (END_TO_END, *CATEGORIES):
        columns[name.replace("_", " ")] = lambda r, name=name: _fmt(r[name]["ratio"])
    return results_table(
        f"B / A — A: {name_a}   B: {name_b}",
        columns,
        rows,
        caption="throughput: images/s ratio; categories: mean ms ratio (— where A is 0)",
    )
