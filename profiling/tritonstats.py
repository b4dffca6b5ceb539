"""Triton's statistics API (``/v2/models/<m>/stats``) as typed, subtractable numbers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class ModelStats:
    """Cumulative counters of one model: request count, ns per phase, executions per batch size."""

    model: str
    requests: int
    executions: int
    ns: dict[str, int]
    batches: dict[int, int] = field(default_factory=dict)  # batch size -> executions

    @classmethod
    def from_json(cls, model: str, stats: dict[str, Any]) -> ModelStats:
        (entry,) = [s for s in stats.get("model_stats", []) if s["name"] == model][:1] or [{}]
        inference = entry.get("inference_stats", {})
        return cls(
            model=model,
            requests=int(inference.get("success", {}).get("count", 0)),
            executions=int(entry.get("execution_count", 0)),
            ns={p: int(inference.get(p, {}).get("ns", 0)) for p in PHASES},
            batches={
                int(b["batch_size"]): int(b.get("compute_infer", {}).get("count", 0))
                for b in entry.get("batch_stats", [])
            },
        )

    def __sub__(self, earlier: ModelStats) -> ModelStats:
        return ModelStats(
            model=self.model,
            requests=self.requests - earlier.requests,
            executions=self.executions - earlier.executions,
            ns={p: self.ns[p] - earlier.ns.get(p, 0) for p in PHASES},
            batches={
                size: count - earlier.batches.get(size, 0)
                for size, count in self.batches.items()
                if count - earlier.batches.get(size, 0) > 0
            },
        )

    def mean_ms(self, phase: str) -> float:
        """Mean milliseconds of ``phase`` per request."""
        return self.ns[phase] / self.requests / 1e6 if self.requests else 0.0


def fetch(client: Any, model: str) -> ModelStats:
    """Current counters of ``model`` from a tritonclient gRPC client."""
    return ModelStats.from_json(model, client.get_inference_statistics(model, as_json=True))


def fetch_settled(
    client: Any, models: list[str], timeout_s: float = 5.0, interval_s: float = 0.02
) -> dict[str, ModelStats]:
    """Counters of ``models`` once two readings ``interval_s`` apart agree.

    Triton updates a model's statistics after its response left, so right after the client got
    its last answer a late update may still be due; a settled reading excludes that race.
    Gives the last reading if they keep changing for ``timeout_s`` (other traffic).
    """
    deadline = time.monotonic() + timeout_s
    last = {m: fetch(client, m) for m in models}
    while time.monotonic() < deadline:
        time.sleep(interval_s)  # spacing of the readings; the deadline bounds the wait
        current = {m: fetch(client, m) for m in models}
        if current == last:
            break
        last = current
    return last
