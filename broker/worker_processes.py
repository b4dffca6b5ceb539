"""Stage workers of a pipeline as processes of their own (the ``cvserve worker`` command,
``python -m cvserve.pipelines.app.kafka_commands worker``), as they run in production: started
together, watched through their stats files, stopped by pid with SIGTERM (finish the batch in
hand, commit), killed if they do not stop.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cvserve.broker.routes import route
from cvserve.broker.stats import WorkerStats


class WorkerStartError(RuntimeError):
    """A worker exited or did not start consuming in time; the message quotes its log."""


@dataclass
class WorkerProcess:
    """One worker process of ``stage`` and the files it writes."""

    stage: str
    process: subprocess.Popen[bytes]
    stats_path: Path
    log_path: Path

    def stats(self) -> WorkerStats | None:
        return WorkerStats.read(self.stats_path)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log written)"


@dataclass
class StageWorkerProcesses:
    """``per_stage`` workers for every broker stage of ``pipeline``, logs and stats in ``folder``.

    Use as a context manager: workers are started on entry, running (consuming) once `wait_running`
    returns, and stopped on exit.
    """

    bootstrap: str
    pipeline: str
    triton_url: str
    namespace: str
    folder: Path
    per_stage: int = 1
    extra_args: Sequence[str] = ()
    workers: list[WorkerProcess] = field(default_factory=list, init=False)

    def command(self, stage: str, stats_path: Path) -> list[str]:
        return [
            sys.executable, "-m", "cvserve.pipelines.app.kafka_commands", "worker",
            "--bootstrap", self.bootstrap, "--namespace", self.namespace,
            "--pipeline", self.pipeline, "--stage", stage, "--triton-url", self.triton_url,
            "--stats-file", str(stats_path), *self.extra_args,
        ]  # fmt: skip

    def start(self) -> StageWorkerProcesses:
        self.folder.mkdir(parents=True, exist_ok=True)
        for stage in route(self.pipeline).stage_names:
            for n in range(self.per_stage):
                stats_path = self.folder / f"worker-{stage}-{n}.json"
                log_path = self.folder / f"worker-{stage}-{n}.log"
                stats_path.unlink(missing_ok=True)
                with log_path.open("wb") as log:
                    process = subprocess.Popen(
                        self.command(stage, stats_path), stdout=log, stderr=subprocess.STDOUT
                    )
                self.workers.append(WorkerProcess(stage, process, stats_path, log_path))
        return self

    def wait_running(self, timeout_s: float = 60.0) -> None:
        """Return once every worker reports ``running``; `WorkerStartError` if one exited or the
        deadline passed."""
        deadline = time.monotonic() + timeout_s
        waiting = list(self.workers)
        while waiting:
            for worker in list(waiting):
                if worker.process.poll() is not None:
                    raise WorkerStartError(
                        f"{worker.stage} worker {worker.process.pid} exited "
                        f"({worker.process.returncode}):\n{worker.log_tail()}"
                    )
                stats = worker.stats()
                if stats is not None and stats.state == "running":
                    waiting.remove(worker)
            if waiting and time.monotonic() > deadline:
                raise WorkerStartError(
                    f"{len(waiting)} worker(s) not running after {timeout_s:.0f} s; "
                    f"log of pid {waiting[0].process.pid}:\n{waiting[0].log_tail()}"
                )
            if waiting:
                time.sleep(0.1)  # poll interval; the deadline above bounds the wait

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every worker (by pid), wait, kill those still running after ``timeout_s``."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()

    def __enter__(self) -> StageWorkerProcesses:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
