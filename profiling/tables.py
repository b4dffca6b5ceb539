"""Terminal tables of result rows: one column per (header, cell formatter), right-justified."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rich.table import Table

Row = Mapping[str, Any]


def results_table(
    title: str,
    columns: Mapping[str, Callable[[Row], str]],
    rows: Iterable[Row],
    caption: str | None = None,
) -> Table:
    """A table with a column per ``columns`` entry (header → the cell text of a row)."""
    table = Table(title=title, caption=caption)
    for header in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(cell(row) for cell in columns.values()))
    return table


def field(name: str, fmt: str = "") -> Callable[[Row], str]:
    """The cell of ``row[name]`` formatted with ``fmt`` (``format`` spec, e.g. ``.1f``)."""
    return lambda row: format(row[name], fmt)
