"""CPU time of a server's process tree, by part: where a served request's CPU-seconds go.

Read from ``/proc`` (Linux): a process and its descendants, each named by what it is — a Triton
python-backend stub by the model it serves (its argv names the model's folder), any other process
by its command — and its user + system CPU seconds so far. `cpu_by_part` subtracts two readings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from cvserve.deploy.process import process_tree
from cvserve.deploy.triton_install import stub_model

_TICKS = os.sysconf("SC_CLK_TCK")


def part_name(pid: int) -> str:
    """What the process is: ``stub:<model>`` for a python-backend stub, else its command."""
    model = stub_model(pid)
    if model is not None:
        return f"stub:{model}"
    try:
        return Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name
    except (OSError, UnicodeDecodeError):
        return "gone"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (its own threads; 0 when it has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def reading(pid: int) -> dict[str, float]:
    """CPU seconds so far of ``pid``'s tree, summed per `part_name`."""
    parts: dict[str, float] = {}
    for p in process_tree(pid):
        name = part_name(p)
        parts[name] = parts.get(name, 0.0) + cpu_seconds(p)
    return parts


def cpu_by_part(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each part spent between two readings (parts present in ``after``)."""
    return {name: after[name] - before.get(name, 0.0) for name in after}


def machine_reading() -> dict[int, tuple[str, float]]:
    """Every process on this machine now: pid → (`part_name`, CPU seconds so far)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            out[pid] = (part_name(pid), cpu_seconds(pid))
    return out


def cpu_by_role(
    before: Mapping[int, tuple[str, float]],
    after: Mapping[int, tuple[str, float]],
    role: Callable[[int, str], str],
) -> dict[str, float]:
    """CPU seconds each ``role(pid, part_name)`` spent between two `machine_reading`s (a process
    started in between counts from 0; one that ended in between is missing: /proc forgot it)."""
    roles: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        if name == "gone":
            continue
        spent = seconds - before.get(pid, (name, 0.0))[1]
        key = role(pid, name)
        roles[key] = roles.get(key, 0.0) + max(0.0, spent)
    return roles
