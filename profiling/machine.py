"""What machine a benchmark ran on, recorded beside every number."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from cvserve.deploy.host import usable_cores


def machine_info() -> dict[str, object]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return {
        "cores": usable_cores(),
        "cpu": cpu,
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_report(
    report: dict[str, Any], name: str, out: Path | None = None, console: Any = None
) -> Path:
    """Write a benchmark's JSON ``report`` to ``out`` or ``runs/<name>-<time>.json``; the path
    (said on ``console``, a rich Console, when given)."""
    out = out or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if console is not None:
        console.print(f"wrote {out}")
    return out
