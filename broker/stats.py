"""What a stage worker is doing, as a small JSON file it rewrites after every batch.

`cvserve kafka lag` reads these files beside the group offsets it asks the broker for; tests
poll them to see a worker consume, retry or stop.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cvserve.deploy.kafka import kafka_home


def default_stats_dir() -> Path:
    return kafka_home() / "workers"


@dataclass
class WorkerStats:
    """Counters of one worker process; ``in_flight`` counts consumed, unanswered messages."""

    pipeline: str
    stage: str
    group: str
    pid: int = field(default_factory=os.getpid)
    state: str = "starting"  # starting | running | retrying | stopped
    consumed: int = 0
    results: int = 0
    forwarded: int = 0  # messages sent on to a later stage (crops)
    dead_lettered: int = 0
    retries: int = 0  # waits for Triton to come back
    in_flight: int = 0
    committed_batches: int = 0
    # Records left uncommitted because the group moved their partition mid-batch (the new owner
    # answers them; their outputs were not sent).
    revoked: int = 0
    # Redis Streams: entries taken over (XAUTOCLAIM) from a worker that held them past the claim
    # idle time (it died).
    claimed: int = 0
    # Monotonic ns spent handling polled batches (check, infer, send, commit): busy / wall is
    # how loaded the worker is, consumed / busy what it sustains (`cvserve tune` reads both).
    busy_ns: int = 0
    lag: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> records behind
    metrics_address: str = ""  # host:port of its /metrics, /healthz, /livez ("" when off)
    last_error: str = ""
    updated_ns: int = 0

    def write(self, path: Path) -> None:
        """Replace ``path`` atomically (readers never see half a file)."""
        self.updated_ns = time.time_ns()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> WorkerStats | None:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
