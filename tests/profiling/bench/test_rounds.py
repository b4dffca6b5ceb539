"""The round logic every comparing benchmark reports with (`profiling.bench.rounds`), on scripted
measurements: the order alternates, a noisy round does not move the median, a spread wider than
the distance to the target is reported as undecided."""

from __future__ import annotations

import json

import pytest

from cvserve.profiling.bench.rounds import (
    Spread,
    Verdict,
    alternating_rounds,
    medians,
    per_round_ratios,
    round_order,
)


def test_the_order_is_as_given_then_reversed_round_after_round() -> None:
    assert [round_order(r, ("served", "alone")) for r in range(4)] == [
        ["served", "alone"],
        ["alone", "served"],
        ["served", "alone"],
        ["alone", "served"],
    ]
    assert round_order(1, ["a", "b", "c"]) == ["c", "b", "a"]


def test_alternating_rounds_run_each_part_once_a_round_in_alternating_order() -> None:
    ran: list[tuple[int, str]] = []

    def part(name: str):
        def measure(r: int) -> str:
            ran.append((r, name))
            return f"{name}{r}"

        return measure

    measured = alternating_rounds(3, {"a": part("a"), "b": part("b")})
    assert ran == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    # Each round's results keyed in the order they ran.
    assert [list(m) for m in measured] == [["a", "b"], ["b", "a"], ["a", "b"]]
    assert measured[1] == {"b": "b1", "a": "a1"}
    with pytest.raises(ValueError, match="at least 1"):
        alternating_rounds(0, {"a": part("a")})


def test_a_noisy_round_does_not_move_the_median_and_shows_in_the_spread() -> None:
    quiet = [0.95, 0.96, 0.94, 0.97, 0.95]
    noisy = [0.95, 0.96, 0.50, 0.97, 0.95]  # round 3 fell into a slow window
    assert Spread.of(noisy).median == Spread.of(quiet).median == 0.95
    assert Spread.of(noisy) == Spread(0.95, 0.50, 0.97, 5)
    # A single measurement (or a mean) would have moved with it.
    assert sum(noisy) / 5 < 0.87
    assert Spread.of(noisy).cell() == "0.95 [0.50-0.97]"
    assert Spread.from_dict(json.loads(json.dumps(Spread.of(noisy).to_dict()))) == Spread.of(noisy)


def test_ratios_are_taken_per_round_not_from_medians() -> None:
    served = [10.0, 20.0, 12.0]
    limit = [10.0, 20.0, 24.0]  # the limit moved with the machine in the same rounds
    assert per_round_ratios(served, limit) == [1.0, 1.0, 0.5]
    assert Spread.of(per_round_ratios(served, limit)).median == 1.0
    assert Spread.of(served).median / Spread.of(limit).median == pytest.approx(12 / 20)


def test_medians_go_key_by_key_into_nested_rounds() -> None:
    rounds = [
        {"round": 1, "served": 10.0, "parts": {"stub": 1.0, "client": 0.2}, "label": "x"},
        {"round": 2, "served": 30.0, "parts": {"stub": 3.0}, "label": "x"},
        {"round": 3, "served": 20.0, "parts": {"stub": 2.0, "client": 0.4}, "label": "x"},
    ]
    assert medians(rounds, skip=("round",)) == {
        "served": 20.0,
        "parts": {"stub": 2.0, "client": pytest.approx(0.3)},  # absent from round 2: left out
        "label": "x",
    }


@pytest.mark.parametrize(
    ("rounds", "outcome", "decided"),
    [
        ([0.95, 0.96, 0.94, 0.97, 0.95], "met", True),  # spread 0.03 < distance 0.05
        ([0.80, 0.82, 0.81], "not met", True),  # spread 0.02 < distance 0.09
        ([0.95, 0.96, 0.50, 0.97, 0.95], "undecided", False),  # spread 0.47 > distance 0.05
        ([0.88, 0.93, 0.91], "undecided", False),  # straddles the target
        ([0.92], "met", True),  # one round has no spread to speak of
    ],
)
def test_a_spread_wider_than_its_distance_to_the_target_is_undecided(
    rounds: list[float], outcome: str, decided: bool
) -> None:
    verdict = Verdict("640x480 served / limit", Spread.of(rounds), 0.9)
    assert (verdict.outcome, verdict.decided) == (outcome, decided)
    assert verdict.to_dict()["outcome"] == outcome
    line = verdict.line()
    assert line.startswith("640x480 served / limit: median")
    assert ("UNDECIDED" in line) == (not decided)


def test_the_undecided_line_says_the_spread_and_the_distance() -> None:
    line = Verdict("1920x1080 served / limit", Spread.of([0.95, 0.5, 0.97]), 0.9).line()
    assert "[0.50-0.97]" in line and "target 0.90" in line
    assert "spread 0.47" in line and "(0.05)" in line
