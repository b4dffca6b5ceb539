"""`profiling.quiet`: the CPUs' busy share from /proc/stat, and the wait for a quiet machine."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from cvserve.profiling import quiet


def _stat(path: Path, user: int, idle: int, iowait: int) -> None:
    path.write_text(f"cpu  {user} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n")


def test_busy_fraction_counts_iowait_as_idle(tmp_path: Path, monkeypatch) -> None:
    stat = tmp_path / "stat"
    readings = iter([(100, 100, 0), (130, 160, 10)])  # +30 busy, +60 idle, +10 iowait
    monkeypatch.setattr(quiet, "PROC_STAT", stat)
    monkeypatch.setattr(quiet.time, "sleep", lambda s: _stat(stat, *next(readings)))
    _stat(stat, *next(readings))
    assert quiet.busy_fraction(1.0) == pytest.approx(0.3)


def test_wait_until_quiet_polls_until_the_cpus_are_idle(monkeypatch) -> None:
    samples = iter([0.9, 0.5, 0.1, 0.9])
    monkeypatch.setattr(quiet, "busy_fraction", lambda interval_s: next(samples))
    quiet.wait_until_quiet(busy_below=0.15, timeout_s=60)
    assert next(samples) == 0.9  # stopped at the first quiet sample, the third


def test_wait_until_quiet_gives_up_at_its_deadline(monkeypatch) -> None:
    clock = itertools.count(0.0, 5.0)  # each reading 5 s later
    monkeypatch.setattr(quiet.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(quiet, "busy_fraction", lambda interval_s: 1.0)  # never quiet
    assert quiet.wait_until_quiet(timeout_s=20) >= 20


def test_the_real_machine_reads_between_zero_and_one() -> None:
    busy = quiet.busy_fraction(0.2)
    assert busy is None or 0.0 <= busy <= 1.0
