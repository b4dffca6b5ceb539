"""Alternating rounds: how a benchmark that compares two things reports the comparison.

On a shared machine (this VM backs memory lazily and shares its host) a window of a few seconds
now and then runs slow; a ratio taken from one measurement of each side moves with it (served /
limit read 0.74 or 0.94 for the same command). So each side is measured in rounds, back to back
within a round, the order alternating between rounds (what runs first in one round runs last in
the next); the ratio is taken per round, and the result is the median of the rounds with their
min–max beside it. A noisy window spoils the round it falls in, not the median. A result whose
spread is wider than its distance to a target is not decided by the run: it says so in a line of
its own instead of passing or failing by chance.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

ORDER_RULE = "the first round in the order listed, each later round reversed from the one before"


def round_order(round_index: int, parts: Sequence[T]) -> list[T]:
    """``parts`` in the order given in round 0 (the first), reversed in round 1, as given again
    in round 2, ... (a part's place in the order, and so any drift it rides on, alternates)."""
    return list(parts) if round_index % 2 == 0 else list(reversed(parts))


def alternating_rounds(rounds: int, parts: Mapping[str, Callable[[int], T]]) -> list[dict[str, T]]:
    """Each of ``parts`` run once per round, back to back, in `round_order` of their order in
    ``parts``; each is called with the round's index (0 first), to alternate what it measures
    within itself too. Per round, what each part returned, keyed in the order they ran."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    return [{name: parts[name](r) for name in round_order(r, list(parts))} for r in range(rounds)]


@dataclass(frozen=True)
class Spread:
    """One quantity over ``rounds`` rounds: their median and their min–max."""

    median: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """The spread of ``values`` (one per round; at least one)."""
        values = list(values)
        if not values:
            raise ValueError("a spread needs at least one round")
        return cls(statistics.median(values), min(values), max(values), len(values))

    @classmethod
    def from_dict(cls, spread: Mapping[str, Any]) -> Spread:
        """The inverse of `to_dict` (a spread read back from a report)."""
        return cls(spread["median"], spread["min"], spread["max"], spread["rounds"])

    @property
    def width(self) -> float:
        """max - min of the rounds (0 for one round)."""
        return self.high - self.low

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.low, "max": self.high, "rounds": self.rounds}

    def cell(self, digits: int = 2) -> str:
        """``median [min-max]`` for a table."""
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}-{self.high:.{digits}f}]"


def per_round_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """``numerators[r] / denominators[r]`` for each round ``r`` (both sides of a round measured
    back to back: the ratio of the same minute)."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def medians(rounds: Sequence[Mapping[str, Any]], skip: Iterable[str] = ()) -> dict[str, Any]:
    """Per key, the median over ``rounds`` of a number (a mapping: recursively, key by key); a
    key absent from a round is left out of that key's median; a value that is not a number is
    the first round's. ``skip``: keys left out (a round's number, its order)."""
    skipped = set(skip)
    keys = list(dict.fromkeys(k for r in rounds for k in r if k not in skipped))
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in rounds if key in r]
        if all(isinstance(v, Mapping) for v in values):
            out[key] = medians(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = statistics.median(values)
        else:
            out[key] = values[0]
    return out


@dataclass(frozen=True)
class Verdict:
    """``what``'s rounds against a floor ``target``: met (median at or above it), not met, or
    undecided — the rounds spread wider than the median's distance to the target, so another run
    of the same command could land on the other side."""

    what: str
    spread: Spread
    target: float

    @property
    def distance(self) -> float:
        return abs(self.spread.median - self.target)

    @property
    def decided(self) -> bool:
        return self.spread.width <= self.distance

    @property
    def outcome(self) -> str:
        if not self.decided:
            return "undecided"
        return "met" if self.spread.median >= self.target else "not met"

    def line(self) -> str:
        """One line: the outcome, and for an undecided one the numbers that make it so."""
        s = self.spread
        head = f"{self.what}: median {s.median:.2f} of {s.rounds} rounds [{s.low:.2f}-{s.high:.2f}]"
        if self.decided:
            return f"{head}, target >= {self.target:.2f}: {self.outcome}"
        return (
            f"{head}: UNDECIDED against the target {self.target:.2f} — the rounds spread "
            f"{s.width:.2f}, wider than the median's distance to the target "
            f"({self.distance:.2f}); more rounds or a quieter machine decide it"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "outcome": self.outcome,
            "distance": self.distance,
            "spread_width": self.spread.width,
        }
