"""Result tables: a column per (header, formatter), cells from each row."""

from __future__ import annotations

from cvserve.profiling.tables import field, results_table


def test_columns_and_cells_follow_the_formatters() -> None:
    rows = [{"size": "640x480", "rate": 12.345}, {"size": "1920x1080", "rate": 3.0}]
    table = results_table("t", {"size": field("size"), "img/s": field("rate", ".1f")}, rows)
    assert [c.header for c in table.columns] == ["size", "img/s"]
    assert [list(c._cells) for c in table.columns] == [["640x480", "1920x1080"], ["12.3", "3.0"]]
    assert all(c.justify == "right" for c in table.columns)
