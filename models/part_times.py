"""How long each part of one batch took inside a stage, on its device.

`PartTimes` starts when a batch arrives; each `mark` ends the part running since the previous
mark and names it (a role's work, or its copy to or from the device: `pipelines.variants.TIMED`).
`ns` reads them as `STAGE_TIMES`' vector, a part marked twice adding up. On the CPU the marks
are ``perf_counter_ns``. On a GPU they are CUDA events recorded on the current stream, so a part
ends when its device work has finished, not when the host queued it (read them after the stream
has `models.devices.settled`). Used only when profiling asks (``STAGE_TIMES``,
``STAGE_TIMES_<ROLE>``: `pipelines.variants.with_stage_times`); `PartTimes.off` marks nothing,
so a stage's code marks the same way whether or not it is timed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cvserve.pipelines.spec import Role
from cvserve.pipelines.variants import FUSED_PARTS, TIMED, time_slot


class PartTimes:
    """Marks of one batch on ``device`` (``cpu`` or ``cuda:<id>``); ``role``: the stage's, for
    marks that name only a copy (None in a fused model, whose marks name their role)."""

    def __init__(self, device: str, role: Role | None = None, on: bool = True) -> None:
        self.device, self.role, self.on = device, role, on
        self.marks: list[Any] = []
        self.slots: list[int] = []
        if on:
            self.marks.append(self._now())

    @classmethod
    def off(cls) -> PartTimes:
        """Times nothing: marks are ignored."""
        return cls("cpu", on=False)

    def _now(self) -> Any:
        if self.device == "cpu":
            return time.perf_counter_ns()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def mark_work(self) -> None:
        """The part running since the last mark was this stage's own work."""
        if not self.on:
            return
        if self.role is None:
            raise ValueError("these times have no stage role: name the part's role")
        self.mark(self.role)

    def mark(self, kind: str, role: Role | None = None) -> None:
        """The part running since the last mark ends here: ``role``'s (default: this stage's;
        a role's own work is ``kind`` = the role) ``kind``."""
        if not self.on:
            return
        role = role or (kind if kind in FUSED_PARTS else self.role)
        if role is None:
            raise ValueError(f"a {kind} mark needs its role")
        self.slots.append(time_slot(role, kind))  # type: ignore[arg-type]
        self.marks.append(self._now())

    def ns(self) -> np.ndarray:
        """int64 [len(TIMED)]: each marked part's ns at its place (on a GPU, waits for the last
        event); zeros when nothing was marked."""
        out = np.zeros(len(TIMED), np.int64)
        if len(self.marks) < 2:
            return out
        if self.device == "cpu":
            spans = np.diff(np.asarray(self.marks, np.int64))
        else:
            self.marks[-1].synchronize()
            pairs = zip(self.marks, self.marks[1:], strict=False)
            spans = np.array([int(a.elapsed_time(b) * 1e6) for a, b in pairs], np.int64)
        np.add.at(out, np.asarray(self.slots), spans)
        return out
