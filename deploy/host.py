"""Facts of this machine every layer asks: usable cores and whether CUDA is there."""

from __future__ import annotations

import os
from pathlib import Path


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


# Device nodes of an NVIDIA driver: Linux, and WSL2's GPU paravirtualisation.
_DRIVER_NODES = ("/dev/nvidiactl", "/dev/dxg")


def cuda_available() -> bool:
    """Whether torch can use a CUDA GPU; torch is not imported where no NVIDIA driver is loaded."""
    if not any(Path(node).exists() for node in _DRIVER_NODES):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
