"""The workers-per-stage search of `cvserve tune` on a composite, against measured-like stand-ins:
it adds workers where the load is, keeps only what helps by more than the margin, and stops at
the limits; and the stage loads it reads from the workers' counters."""

from __future__ import annotations

import pytest

from cvserve.broker.stats import WorkerStats
from cvserve.profiling.tune import MARGIN
from cvserve.profiling.tune_workers import (
    StageLoad,
    WorkersTrial,
    search_workers,
    stage_loads,
    stage_settings,
)

STAGES = ("detect", "identify")


def pipeline_of(capacity: dict[str, float], cores: float = 3.0):
    """A two-stage pipeline where stage s with n workers sustains ``capacity[s] * n`` crops
    or images/s, all of it capped by the cores (identify sees 3 crops per image)."""
    measured: list[dict[str, int]] = []

    def measure(counts: dict[str, int]) -> WorkersTrial:
        measured.append(dict(counts))
        detect = capacity["detect"] * counts["detect"]
        identify = capacity["identify"] * counts["identify"] / 3
        rate = min(detect, identify, cores)
        trial = WorkersTrial(dict(counts), images_per_s=rate, crops_per_s=3 * rate)
        trial.stages = [
            StageLoad("detect", counts["detect"], 100, rate / detect, capacity["detect"]),
            StageLoad("identify", counts["identify"], 300, rate / identify, capacity["identify"]),
        ]
        trial.feasible, trial.score = True, rate
        return trial

    return measure, measured


def test_the_busiest_stage_gets_workers_until_the_cores_cap_it() -> None:
    measure, measured = pipeline_of({"detect": 4.0, "identify": 3.0})
    best, trials = search_workers(STAGES, measure, max_workers=4, max_trials=10)
    # identify (3 crops/s per worker = 1 img/s) is the bottleneck until 3 workers reach the cap.
    assert best.workers == {"detect": 1, "identify": 3}
    assert measured[:3] == [
        {"detect": 1, "identify": 1},
        {"detect": 1, "identify": 2},
        {"detect": 1, "identify": 3},
    ]
    assert best.chosen and sum(t.chosen for t in trials) == 1
    for t in trials:  # nothing measured beat the choice by more than the margin
        assert t.score <= best.score * (1 + MARGIN)


def test_limits_stop_the_search() -> None:
    measure, _ = pipeline_of({"detect": 4.0, "identify": 0.3}, cores=100)
    best, trials = search_workers(STAGES, measure, max_workers=2, max_trials=10)
    assert best.workers == {"detect": 1, "identify": 2}
    assert all(max(t.workers.values()) <= 2 for t in trials)
    _, trials = search_workers(STAGES, measure, max_workers=8, max_trials=3)
    assert len(trials) == 3


def test_no_feasible_trial_is_an_error() -> None:
    def infeasible(counts: dict[str, int]) -> WorkersTrial:
        return WorkersTrial(dict(counts), note="p99 over 10 ms")

    with pytest.raises(RuntimeError, match="no worker count met the goal"):
        search_workers(STAGES, infeasible, max_workers=2, max_trials=4)


def stats(pid: int, consumed: int, busy_s: float) -> WorkerStats:
    return WorkerStats("p", "s", "g", pid=pid, consumed=consumed, busy_ns=int(busy_s * 1e9))


def test_stage_loads_from_two_snapshots_of_the_counters() -> None:
    before = {"detect": [stats(1, 10, 1.0)], "identify": [stats(2, 30, 1.0), stats(3, 0, 0.0)]}
    after = {
        "detect": [stats(1, 50, 9.0)],  # 40 records in 8 busy s of a 10 s run
        "identify": [stats(2, 90, 4.0), stats(3, 60, 3.0)],  # 120 records in 6 busy s
    }
    detect, identify = stage_loads(before, after, {"detect": 1, "identify": 2}, wall_s=10.0)
    assert (detect.records, detect.busy, detect.rate) == (40, pytest.approx(0.8), 5.0)
    assert (identify.records, identify.busy, identify.rate) == (120, pytest.approx(0.3), 20.0)
    best = WorkersTrial({"detect": 1, "identify": 2}, stages=[detect, identify])
    assert best.busiest_first() == ["detect", "identify"]
    assert stage_settings(best) == {
        "detect": {"workers": 1, "rate": 5.0},
        "identify": {"workers": 2, "rate": 20.0},
    }
