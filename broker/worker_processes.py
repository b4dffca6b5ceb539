"""Stage workers of a pipeline as processes of their own (the ``cvserve worker`` command,
``python -m cvserve.pipelines.app.kafka_commands worker``), as they run in production: started
together (each a `deploy.process.ManagedProcess`), watched through their stats files, stopped by
pid with SIGTERM (finish the batch in hand, commit), killed with their process group if they do
not stop.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cvserve.broker.routes import BrokerStage, Route, as_route
from cvserve.broker.stats import WorkerStats
from cvserve.deploy.process import ManagedProcess, ProcessStartError, poll_until


class WorkerStartError(ProcessStartError):
    """A worker exited or did not start consuming in time; the message quotes its log."""


@dataclass(frozen=True)
class WorkerCommand:
    """How one broker's stage workers start: ``python -m module worker`` (the worker subcommand
    without the rest of the `cvserve` parser: a quicker start), the broker's address given as
    ``address_option``. Called, the command line of one worker."""

    module: str
    address_option: str

    def __call__(
        self,
        address: str,
        namespace: str,
        pipeline: str,
        stage: str | None,
        triton_url: str,
        stats_path: Path,
        extra_args: Sequence[str] = (),
    ) -> list[str]:
        """The command line of one stage worker (``stage`` None: the route's first)."""
        return [
            sys.executable, "-m", self.module, "worker",
            self.address_option, address, "--namespace", namespace, "--pipeline", pipeline,
            *(("--stage", stage) if stage else ()), "--triton-url", triton_url,
            "--stats-file", str(stats_path), *extra_args,
        ]  # fmt: skip


WORKER_MODULE = "cvserve.pipelines.app.kafka_commands"
# The Kafka stage workers (the `cvserve worker` subcommand).
worker_command = WorkerCommand(WORKER_MODULE, "--bootstrap")


@dataclass
class WorkerProcess:
    """One running worker of ``stage`` and the files it writes."""

    stage: str
    managed: ManagedProcess
    stats_path: Path

    @classmethod
    def start(cls, stage: str, command: Sequence[str], stats_path: Path) -> WorkerProcess:
        """Launch ``command``; its log goes beside ``stats_path`` (``.log``)."""
        stats_path.unlink(missing_ok=True)
        log_path = stats_path.with_suffix(".log")
        managed = ManagedProcess(f"{stage} worker", command, log_path, error=WorkerStartError)
        return cls(stage, managed.start(), stats_path)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running worker, None once stopped."""
        return self.managed.process

    @property
    def log_path(self) -> Path:
        return self.managed.log_path

    def stats(self) -> WorkerStats | None:
        return WorkerStats.read(self.stats_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running_and_consuming(self) -> bool:
        """True once it reports ``running``; `WorkerStartError` if it exited."""
        self.managed.check_alive()
        stats = self.stats()
        return stats is not None and stats.state == "running"


@dataclass
class StageWorkerProcesses:
    """Workers for every broker stage of ``pipeline`` (a `Route`, or the name of a pipeline served
    as one ensemble), logs and stats in ``folder``: ``per_stage``
    of each (a number, or a number by stage name), or — None — each stage's own ``workers`` (the
    composite file's, as `cvserve tune` chose them; 1 when never tuned).

    Each worker is told the pipeline's name and ``extra_args`` (a pipeline file's ``--file F``):
    its own entry point resolves them to the same route.

    Use as a context manager: workers are started on entry, running (consuming) once `wait_running`
    returns, and stopped on exit.
    """

    bootstrap: str
    pipeline: Route | str
    triton_url: str
    namespace: str
    folder: Path
    per_stage: int | Mapping[str, int] | None = None
    extra_args: Sequence[str] = ()
    workers: list[WorkerProcess] = field(default_factory=list, init=False)
    # How a worker starts, told ``bootstrap`` (a subclass: another broker's workers).
    command_line: ClassVar[WorkerCommand] = worker_command

    def start(self) -> StageWorkerProcesses:
        self.folder.mkdir(parents=True, exist_ok=True)
        for stage in self.route.stages:
            for n in range(self.count(stage)):
                stats_path = self.folder / f"worker-{stage.name}-{n}.json"
                command = self.command(stage.name, stats_path)
                self.workers.append(WorkerProcess.start(stage.name, command, stats_path))
        return self

    @property
    def route(self) -> Route:
        return as_route(self.pipeline)

    def count(self, stage: BrokerStage) -> int:
        """How many workers ``stage`` gets."""
        if self.per_stage is None:
            return stage.workers
        if isinstance(self.per_stage, int):
            return self.per_stage
        return self.per_stage.get(stage.name, stage.workers)

    def command(self, stage: str, stats_path: Path) -> list[str]:
        """The command line of one worker of ``stage``."""
        return self.command_line(
            self.bootstrap,
            self.namespace,
            self.route.pipeline,
            stage,
            self.triton_url,
            stats_path,
            self.extra_args,
        )

    def wait_running(self, timeout_s: float = 60.0) -> None:
        """Return once every worker reports ``running``; `WorkerStartError` if one exited or the
        deadline passed."""
        waiting = list(self.workers)

        def all_running() -> bool:
            waiting[:] = [w for w in waiting if not w.running_and_consuming()]
            return not waiting

        try:
            poll_until(all_running, timeout_s, what="stage workers running")
        except TimeoutError:
            raise WorkerStartError(
                waiting[0].managed.failure(
                    f"(one of {len(waiting)}) not running after {timeout_s:.0f} s"
                )
            ) from None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every worker (by pid), wait, kill those still running after ``timeout_s``."""
        for worker in self.workers:
            worker.managed.terminate()
        deadline = time.monotonic() + timeout_s  # one grace for all: they stop side by side
        for worker in self.workers:
            worker.managed.wait_stopped(deadline - time.monotonic())

    def __enter__(self) -> StageWorkerProcesses:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
