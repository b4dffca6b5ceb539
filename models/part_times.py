"""How long each consecutive part of one batch took inside a stage, on its device.

`PartTimes` is started when a batch arrives and `mark`-ed as each part ends; `ns` reads the
parts. On the CPU the marks are ``perf_counter_ns``. On a GPU they are CUDA events recorded on
the current stream, so a part ends when its device work has finished, not when the host queued
it (read them after the stream has `models.devices.settled`). Used only when profiling asks
(``STAGE_TIMES``, ``STAGE_TIMES_<ROLE>``: `pipelines.variants.with_stage_times`): nothing is
recorded otherwise.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class PartTimes:
    """Marks of one batch on ``device`` (``cpu`` or ``cuda:<id>``)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.marks: list[Any] = []
        self.mark()

    def mark(self) -> None:
        """The current part ends here (the first mark, made at construction, starts the first)."""
        if self.device == "cpu":
            self.marks.append(time.perf_counter_ns())
            return
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        self.marks.append(event)

    def ns(self) -> np.ndarray:
        """int64 [marks - 1]: each part's duration in ns (on a GPU, waits for the last event)."""
        if self.device == "cpu":
            return np.diff(np.asarray(self.marks, np.int64))
        self.marks[-1].synchronize()
        return np.array(
            [
                int(a.elapsed_time(b) * 1e6)
                for a, b in zip(self.marks, self.marks[1:], strict=False)
            ],
            np.int64,
        )
