"""Measurements kept per machine: what `models.engine_choice` and `cvserve tune` measured, so a
later process serves with it instead of measuring again.

One JSON file per kind (``engines``, ``tuned``) and machine — CPU model, cores and the versions of
the engine packages, hashed into the name, so a measurement never outlives what it measured —
in ``$CVSERVE_MEASUREMENTS`` (default ``~/.cache/cvserve/measurements``). Entries are JSON values
by key. Writes hold a file lock and replace the file atomically; `locked` lets a caller measure
under the same lock, so processes needing the same entry at once measure it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from cvserve.deploy.host import usable_cores

STORE_ENV = "CVSERVE_MEASUREMENTS"
# Packages whose version changes what an engine measurement says.
_VERSIONED = ("torch", "onnxruntime", "openvino", "nvidia-dali-cuda130")


def store_dir() -> Path:
    return Path(os.environ.get(STORE_ENV) or Path.home() / ".cache" / "cvserve" / "measurements")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def machine_key() -> dict[str, Any]:
    """What a measurement depends on besides what was measured: CPU, cores, package versions."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": usable_cores(), **{p: _version(p) for p in _VERSIONED}}


def store_file(kind: str) -> Path:
    """The ``kind`` store of this machine."""
    digest = hashlib.sha1(json.dumps(machine_key(), sort_keys=True).encode()).hexdigest()[:12]
    return store_dir() / f"{kind}-{digest}.json"


@contextlib.contextmanager
def locked(kind: str) -> Iterator[Path]:
    """Hold the ``kind`` store's lock; yields the store's path."""
    path = store_file(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _entries(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: measure again
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def get(kind: str, key: str) -> Any | None:
    """The stored value of ``key`` (None: not measured on this machine)."""
    entry = _entries(store_file(kind)).get(key)
    return entry.get("value") if isinstance(entry, dict) else None


def put_locked(path: Path, key: str, value: Any) -> None:
    """Store ``value`` as ``key`` in the store ``path`` whose lock the caller holds."""
    entries = _entries(path)
    entries[key] = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "value": value}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"machine": machine_key(), "entries": entries}, indent=1) + "\n")
    tmp.replace(path)  # atomic: a reader sees the old file or the new one


def put(kind: str, key: str, value: Any) -> Path:
    """Store ``value`` as ``key`` (replacing what was there); the store's path."""
    with locked(kind) as path:
        put_locked(path, key, value)
    return path
