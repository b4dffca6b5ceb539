"""One lifecycle for every process cvserve starts (Triton, the Kafka broker, stage workers) and
one deadline poll for everything that waits.

A `ManagedProcess` starts in its own session (its own process group, so whatever it spawns is
stopped with it and a terminal's Ctrl-C is ours to handle), writes stdout and stderr to its log,
gets ready within a deadline or fails quoting its log, and stops by pid (SIGTERM, then SIGKILL)
and then by process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def poll_until(
    condition: Callable[[], T],
    timeout_s: float,
    *,
    interval_s: float = 0.1,
    what: str = "the condition",
) -> T:
    """Call ``condition`` until it returns something truthy (returned), or raise `TimeoutError`
    naming ``what`` once ``timeout_s`` passed. ``interval_s`` is the pause between calls (0 when
    the condition blocks by itself, e.g. a consumer poll); a condition that can never become true
    (a process that exited) raises to fail at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:g} s")
        if interval_s > 0:
            time.sleep(interval_s)  # the poll interval; the deadline above bounds the wait


def log_tail(path: Path, chars: int = 2000) -> str:
    """The end of a log file, or ``(no log written)``."""
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log written)"


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread or process ended meanwhile
            continue
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant alive now (Linux ``/proc``)."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += _children(p)
    return tree


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class ProcessStartError(RuntimeError):
    """A process exited, or did not get ready in time; the message quotes its log."""


@dataclass
class ManagedProcess:
    """``command`` run as its own session leader, output appended to ``log_path``.

    ``summary(log_path)`` is what a failure quotes (default: the log's tail); ``error`` is the
    `ProcessStartError` a failed start raises.
    """

    name: str
    command: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    summary: Callable[[Path], str] = log_tail
    error: type[ProcessStartError] = ProcessStartError
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} not started"
        return self.process.pid

    def start(self, banner: str = "", append: bool = False) -> ManagedProcess:
        """Launch; ``banner`` is written to the log first; ``append`` keeps earlier logs."""
        if self.process is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab" if append else "wb") as log:
            if banner:
                log.write(banner.encode())
                log.flush()
            self.process = subprocess.Popen(
                list(self.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if self.env is None else dict(self.env),
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def failure(self, what: str) -> str:
        """``what`` happened to this process, with its log quoted."""
        return f"{self.name} {what}; log {self.log_path}:\n{self.summary(self.log_path)}"

    def check_alive(self) -> None:
        """Raise ``error`` if the process has ended."""
        assert self.process is not None, f"{self.name} not started"
        code = self.process.poll()
        if code is not None:
            raise self.error(self.failure(f"exited with code {code} before it was ready"))

    def wait_ready(
        self,
        ready: Callable[[], bool],
        timeout_s: float,
        fatal: Callable[[], str | None] = lambda: None,
        interval_s: float = 0.2,
        on_timeout: Callable[[], str] = lambda: "",
    ) -> None:
        """Return once ``ready()``; raise ``error`` if the process ends, if ``fatal()`` names a
        reason it never will, or at the deadline (after ``on_timeout()``, which may add to the
        log what the failure should quote, and returns lines for its end)."""

        def check() -> bool:
            self.check_alive()
            if ready():
                return True
            reason = fatal()
            if reason:
                raise self.error(self.failure(f"cannot get ready: {reason}"))
            return False

        try:
            poll_until(check, timeout_s, interval_s=interval_s, what=self.name)
        except TimeoutError:
            extra = on_timeout()
            message = self.failure(f"not ready after {timeout_s:.0f} s")
            raise self.error(f"{message}\n{extra}" if extra else message) from None

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM by pid); `wait_stopped` finishes the stop."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

    def wait_stopped(self, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for the process to end, then SIGKILL it and its whole process
        group (children may outlive it); returns its exit code (None if never started)."""
        process, self.process = self.process, None
        if process is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, timeout_s))
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        return process.returncode

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then kill the process and its group."""
        self.terminate()
        return self.wait_stopped(timeout_s)


def stop_pid(pid: int, timeout_s: float) -> None:
    """Stop a process another cvserve process started (known by pid only): SIGTERM, wait up to
    ``timeout_s``, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        poll_until(lambda: not pid_alive(pid), timeout_s, what=f"pid {pid} stopping")
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
