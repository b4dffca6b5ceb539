"""A batch's parts timed inside a stage (`models.part_times`), on the CPU: one duration per
part, each at least what the part spent."""

from __future__ import annotations

import time

import numpy as np

from cvserve.models.part_times import PartTimes


def _busy(ns: int) -> None:
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


def test_each_part_lasts_from_the_mark_before_it() -> None:
    times = PartTimes("cpu")
    for ns in (2_000_000, 0, 5_000_000):
        _busy(ns)
        times.mark()
    parts = times.ns()
    assert parts.dtype == np.int64 and parts.shape == (3,)
    assert parts[0] >= 2_000_000 and parts[2] >= 5_000_000 and parts[1] >= 0
    assert parts.sum() == times.marks[-1] - times.marks[0]
