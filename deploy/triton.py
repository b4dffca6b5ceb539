"""Run the real tritonserver 2.51 locally: start, wait until ready, stop, clean up.

Every trap seen with this binary has a guard here (shared/FINDINGS.md):
the python-backend stub for the running Python is copied into a backend directory; the bundled
libraries and Python's LIBDIR are on LD_LIBRARY_PATH (else a stub dies and the server never gets
ready); the venv's ``bin`` is first on PATH (the stub finds the venv through ``python3``);
NumPy >= 2 is refused (the stub would corrupt tensors); ports are chosen free or checked before
launch (Triton binds only after loading models); readiness is polled with a deadline; failures
quote the server log; shutdown closes clients, sends SIGTERM, then kills the process group and
removes only this server's shared-memory regions.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cvserve.deploy.ports import free_ports, port_in_use
from cvserve.deploy.process import ManagedProcess, ProcessStartError, poll_until, process_tree
from cvserve.deploy.triton_grpc import TritonTls, grpc_client
from cvserve.deploy.triton_install import STUB_NAME, TritonInstall, stub_model


class TritonStartError(ProcessStartError):
    """The server could not be started or never became ready; the message quotes its log."""


class _Closable(Protocol):
    def close(self) -> Any: ...


# Log lines after which the server never gets ready by itself (a stub died): fail at once.
FATAL_LOG_LINES = (
    "error while loading shared libraries",
    f"{STUB_NAME} is not found",
)
# Harmless error lines every CPU-only start prints.
_BENIGN_ERRORS = ("CudaDriverHelper has not been initialized",)


def failure_summary(path: Path, lines: int = 12) -> str:
    """What went wrong, from a Triton log: its error lines (``E…``) and failed-model rows, then
    the last ``lines`` lines."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    all_lines = text.splitlines()
    errors = [
        line.strip()[:400]
        for line in all_lines
        if (line[:1] == "E" and line[1:5].isdigit() and not any(b in line for b in _BENIGN_ERRORS))
        or "UNAVAILABLE" in line
        or "Failed to initialize Python stub" in line
        or any(pattern in line for pattern in FATAL_LOG_LINES)
    ]
    loading = still_loading(text)
    stacks = stub_stacks(text)
    tail = all_lines[-lines:]
    parts = (
        (["errors:", *errors] if errors else [])
        + ([f"still loading: {', '.join(loading)}"] if loading else [])
        + (["where their stubs were (SIGUSR1):", *stacks] if stacks else [])
        + ["last lines:", *tail]
    )
    return "\n".join(parts)


def still_loading(log: str) -> list[str]:
    """The models a Triton log shows loading and neither loaded nor failed, in load order."""
    started = re.findall(r'"loading: ([^":]+):\d+"', log)
    ended = set(re.findall(r"(?:successfully loaded|failed to load) '([^']+)'", log))
    return [name for name in dict.fromkeys(started) if name not in ended]


def stub_stacks(log: str, lines: int = 40) -> list[str]:
    """The Python stacks python-backend stubs dumped into a Triton log on SIGUSR1
    (`cvserve.models.triton` registers the dump), innermost call first, at most ``lines``: each
    dump's header and the frames right after it (an exception's traceback, "most recent call
    last", is not one)."""
    frames: list[str] = []
    in_dump = False
    for line in log.splitlines():
        if re.match(r"(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\)", line):
            in_dump = True
        elif not (in_dump and line.startswith('  File "')):
            in_dump = False
            continue
        frames.append(line.rstrip())
    return frames[:lines]


def signal_stubs(server_pid: int, log_path: Path, timeout_s: float = 5.0) -> str:
    """Ask the python-backend stubs below ``server_pid`` whose models are `still_loading` to dump
    their Python stacks into the log (SIGUSR1; only stubs, as any other process would die of
    it), and wait up to ``timeout_s`` for them to appear; returns the memory available then (a
    line for the failure). Called only on a server about to be stopped: a stub whose model
    never imported `cvserve.models.triton` has no handler and ends."""
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    loading = set(still_loading(log))
    stubs = [pid for pid in process_tree(server_pid) if stub_model(pid) in loading]
    memory = f"memory available: {_memory_available()}"
    if not stubs:
        return memory
    size = log_path.stat().st_size if log_path.exists() else 0
    for pid in stubs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
    with contextlib.suppress(TimeoutError):
        poll_until(
            lambda: log_path.exists() and log_path.stat().st_size > size,
            timeout_s,
            what="the stubs' stacks",
        )
    return memory


def _memory_available() -> str:
    """``MemAvailable`` of ``MemTotal`` from /proc/meminfo, in GiB (Linux)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        kib = [int(fields[k].split()[0]) for k in ("MemAvailable", "MemTotal")]
    except (OSError, KeyError, ValueError):
        return "unknown"
    return f"{kib[0] / 2**20:.1f} of {kib[1] / 2**20:.1f} GiB"


def _check_numpy_below_2() -> None:
    version = importlib.metadata.version("numpy")
    if int(version.split(".")[0]) >= 2:
        raise TritonStartError(
            f"NumPy {version} is installed: the Triton 2.51 python-backend stub misreads tensors "
            "under NumPy 2 (silently wrong data). Install numpy<2 (./deploy/setup.sh does)."
        )


@dataclass
class TritonServer:
    """One local tritonserver process serving ``repository``.

    Use as a context manager, or call `start` / `stop`. Ports default to free ones on ``host``.
    """

    repository: Path
    workdir: Path | None = None
    host: str = "127.0.0.1"
    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    exit_timeout_s: int = 5
    log_verbose: int = 0
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    python_version: tuple[int, int] | None = None
    # gRPC over TLS (HTTP and metrics stay plain, on loopback by default).
    tls: TritonTls | None = None

    managed: ManagedProcess | None = field(default=None, init=False)
    shm_prefix: str = field(default="", init=False)
    _clients: list[_Closable] = field(default_factory=list, init=False)
    _own_workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running tritonserver, None before `start` and after `stop`."""
        return None if self.managed is None else self.managed.process

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "tritonserver.log"

    def command(self, backends: Path) -> list[str]:
        """The tritonserver command line."""
        install = TritonInstall.discover()
        return [
            str(install.binary),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            # p50/p99 per model for dashboards (nv_inference_*_summary_us{quantile=...}).
            "--metrics-config=summary_latencies=true",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *(self.tls.server_args() if self.tls else ()),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        install = TritonInstall.discover()
        env = dict(os.environ)
        venv_bin = str(Path(sys.prefix) / "bin")
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (install.library_path(), env.get("LD_LIBRARY_PATH", "")) if p
        )
        # One torch/OpenMP thread per stub unless told otherwise: stubs share few cores.
        env.setdefault("OMP_NUM_THREADS", "1")
        env.update(self.env)
        return env

    def start(self, timeout_s: float = 120.0) -> TritonServer:
        """Launch and block until ``/v2/health/ready`` answers 200, or raise `TritonStartError`."""
        if self.managed is not None:
            raise TritonStartError("server already started")
        _check_numpy_below_2()
        if not Path(self.repository).is_dir():
            raise TritonStartError(f"model repository {self.repository} does not exist")
        if self.workdir is None:
            self._own_workdir = tempfile.TemporaryDirectory(prefix="cvserve-triton-")
            self.workdir = Path(self._own_workdir.name)
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        attrs = ("http_port", "grpc_port", "metrics_port")
        given = {getattr(self, attr) for attr in attrs}
        # Distinct: one each, never shared, none a given one.
        picked = iter(p for p in free_ports(2 * len(attrs), self.host) if p not in given)
        for attr in attrs:
            port = getattr(self, attr)
            if port is None:
                setattr(self, attr, next(picked))
            elif port_in_use(port, self.host):
                raise TritonStartError(
                    f"{attr.replace('_', ' ')} {port} on {self.host} is already in use"
                )
        self.shm_prefix = f"cvserve_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        backends = TritonInstall.discover().prepare_backends(
            self.workdir / "backends", self.python_version
        )
        # Its own process group: the python-backend stubs are stopped with it.
        self.managed = ManagedProcess(
            "tritonserver",
            self.command(backends),
            self.log_path,
            env=self.environment(),
            cwd=self.workdir,
            summary=failure_summary,
            error=TritonStartError,
        ).start()
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            self.managed.wait_ready(
                lambda: self._answers_ready(url),
                timeout_s,
                self._fatal_log_line,
                on_timeout=lambda: signal_stubs(self.managed.pid, self.log_path),
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _fatal_log_line(self) -> str | None:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if any(pattern in line for pattern in FATAL_LOG_LINES):
                return line.strip()
        return None

    @staticmethod
    def _answers_ready(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def is_ready(self) -> bool:
        """True while the process runs and ``/v2/health/ready`` answers 200."""
        if self.process is None or self.process.poll() is not None:
            return False
        return self._answers_ready(f"http://{self.http_url}/v2/health/ready")

    def register_client(self, client: _Closable) -> _Closable:
        """Close ``client`` before shutdown (an open connection stalls Triton's exit)."""
        self._clients.append(client)
        return client

    def grpc_client(self) -> Any:
        """A tritonclient gRPC client to this server (over TLS when configured, see
        `deploy.triton_grpc`), closed by `stop`."""
        return self.register_client(grpc_client(self.grpc_url))

    def stop(self) -> None:
        """Close clients, SIGTERM, wait, then kill the process group; remove own shm regions."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        managed, self.managed = self.managed, None
        if managed is not None:
            # Stubs may outlive the server: the whole group it led is killed after it.
            managed.stop(timeout_s=self.exit_timeout_s + 10)
        if self.shm_prefix:
            for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
                with contextlib.suppress(OSError):
                    region.unlink()

    def __enter__(self) -> TritonServer:
        return self.start() if self.managed is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_workdir is not None:
            self._own_workdir.cleanup()
            self._own_workdir = None
