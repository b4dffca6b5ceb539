"""A batch's parts timed inside a stage (`models.part_times`), on the CPU: each part's duration
at its place of `TIMED`, at least what the part spent; a part marked twice adds up."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cvserve.models.part_times import PartTimes
from cvserve.pipelines.variants import TIMED, TO_DEVICE, TO_HOST, time_slot


def _busy(ns: int) -> None:
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


def test_each_part_lasts_from_the_mark_before_it_at_its_place() -> None:
    times = PartTimes("cpu")  # a fused model's: every mark names its role
    for ns, kind, role in (
        (2_000_000, "preprocess", None),
        (0, "inference", None),
        (3_000_000, "postprocess", None),
        (1_000_000, TO_HOST, "postprocess"),
    ):
        _busy(ns)
        times.mark(kind, role)
    parts = times.ns()
    assert parts.dtype == np.int64 and parts.shape == (len(TIMED),)
    assert parts[time_slot("preprocess", "preprocess")] >= 2_000_000
    assert parts[time_slot("postprocess", "postprocess")] >= 3_000_000
    assert parts[time_slot("postprocess", TO_HOST)] >= 1_000_000
    assert parts[time_slot("inference", TO_DEVICE)] == 0  # never marked
    assert parts.sum() == times.marks[-1] - times.marks[0]


def test_a_stage_apart_marks_its_copies_and_its_work_adds_up() -> None:
    times = PartTimes("cpu", role="inference")
    _busy(500_000)
    times.mark_work()  # taking its inputs
    _busy(1_000_000)
    times.mark(TO_DEVICE)
    _busy(2_000_000)
    times.mark("inference")
    _busy(1_000_000)
    times.mark_work()  # what it did after: its work too
    parts = times.ns()
    copy, work = time_slot("inference", TO_DEVICE), time_slot("inference", "inference")
    assert parts[copy] >= 1_000_000 and parts[work] >= 3_500_000
    assert parts.sum() == parts[copy] + parts[work]


def test_off_times_nothing_and_a_copy_needs_its_role() -> None:
    off = PartTimes.off()
    off.mark(TO_HOST)
    off.mark_work()
    assert not off.marks and not off.ns().any()
    with pytest.raises(ValueError, match="to_host mark needs its role"):
        PartTimes("cpu").mark(TO_HOST)
    with pytest.raises(ValueError, match="no stage role"):
        PartTimes("cpu").mark_work()  # a fused model's marks name their role
