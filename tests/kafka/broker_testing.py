"""Shared by the Kafka tests besides fixtures: polling with a deadline, images, worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cvserve.broker.stats import WorkerStats
from cvserve.preprocess.synthetic import synthetic_image

PIPELINE = "classify"
# Short group timings: a killed worker's partitions move within seconds.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` at deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)  # poll interval; the deadline bounds the wait
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def small_jpegs(count: int, first_seed: int = 0) -> list[bytes]:
    """Distinct small JPEGs of a few sizes (quick to preprocess on CPU)."""
    sizes = ((96, 72), (64, 64), (120, 80), (80, 100))
    return [
        synthetic_image(*sizes[seed % len(sizes)], seed=seed)
        for seed in range(first_seed, first_seed + count)
    ]


@dataclass
class WorkerProcess:
    """A ``cvserve worker`` subprocess and the files it writes."""

    process: subprocess.Popen[bytes]
    stats_path: Path
    log_path: Path

    def stats(self) -> WorkerStats | None:
        return WorkerStats.read(self.stats_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_stats(self, predicate: Callable[[WorkerStats], bool], timeout_s: float, what: str):
        def check() -> WorkerStats | None:
            if self.process.poll() is not None:
                pytest.fail(
                    f"worker exited ({self.process.returncode}) while waiting for {what}:\n"
                    f"{self.log()[-3000:]}"
                )
            stats = self.stats()
            return stats if stats is not None and predicate(stats) else None

        return wait_until(check, timeout_s, f"worker {self.process.pid}: {what}")

    def signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)
