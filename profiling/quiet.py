"""Wait for the machine to go quiet before a measurement, so that whatever the setup measured
before left running is not charged to the next one. Linux `/proc/stat`; elsewhere nothing is
waited for."""

from __future__ import annotations

import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot; None where `/proc/stat` is absent."""
    if not PROC_STAT.exists():
        return None
    fields = [int(v) for v in PROC_STAT.read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user time
    return total - idle, total


def busy_fraction(interval_s: float) -> float | None:
    """The fraction of all CPUs busy over the next ``interval_s`` seconds (0..1), None where it
    cannot be read."""
    before = _cpu_ticks()
    time.sleep(interval_s)  # the sampling interval itself, not a wait for readiness
    after = _cpu_ticks()
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def wait_until_quiet(
    busy_below: float = 0.15, interval_s: float = 1.0, timeout_s: float = 60.0
) -> float:
    """Poll until the CPUs are less than ``busy_below`` busy over an ``interval_s`` sample, or
    ``timeout_s`` passed; the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        busy = busy_fraction(interval_s)
        if busy is None or busy < busy_below:
            break
    return round(time.monotonic() - start, 1)
