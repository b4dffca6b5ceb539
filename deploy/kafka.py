"""Run a real Apache Kafka 4.x broker locally: KRaft single node, bound to 127.0.0.1.

The broker's jars come from Maven Central (``deploy/kafka/pom.xml``, fetched by
``deploy/setup.sh`` into `kafka_home`'s ``libs/``) and run on the machine's Java 17. A broker owns a
state directory: ``server.properties``, ``data/`` (formatted on first start), ``broker.log`` and
``broker.json`` (pid, ports), so it can be stopped and started again on the same data, and
stopped by pid from another process (``cvserve kafka stop``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cvserve.deploy.kafka_limits import LIMITS, MessageLimits
from cvserve.deploy.ports import free_port, port_in_use
from cvserve.deploy.process import ManagedProcess, ProcessStartError, stop_pid

KAFKA_HOME_ENV = "CVSERVE_KAFKA_HOME"
# librdkafka's lines while the broker is probed (refused connections) go here, not to stderr.
_CLIENT_LOG = logging.getLogger("cvserve.kafka.probe")
DEFAULT_HEAP_MB = 512
# Topics cvserve creates (and the broker's num.partitions): a few workers per stage share the
# load; a consumer group uses at most this many.
DEFAULT_PARTITIONS = 6
_LOG4J_CONFIG = Path(__file__).resolve().parent / "kafka" / "log4j2.properties"
_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"


class KafkaStartError(ProcessStartError):
    """The broker could not be started or never answered; the message quotes its log."""


def kafka_home() -> Path:
    """Where the jars (``libs/``), the default broker state (``broker/``) and worker stats
    (``workers/``) live: ``$CVSERVE_KAFKA_HOME``, else ``share/cvserve/kafka`` of the Python
    environment cvserve runs in (where ``deploy/setup.sh`` puts the jars), wherever the package
    itself is installed."""
    configured = os.environ.get(KAFKA_HOME_ENV)
    if configured:
        return Path(configured)
    return Path(sys.prefix) / "share" / "cvserve" / "kafka"


def default_state_dir() -> Path:
    return kafka_home() / "broker"


def kafka_libs() -> Path:
    """The folder of broker jars; raises `KafkaStartError` naming the setup step if missing."""
    libs = kafka_home() / "libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaStartError(
            f"no Kafka broker jars in {libs}: run ./deploy/setup.sh (it fetches "
            "org.apache.kafka:kafka_2.13 with Maven)"
        )
    return libs


def kafka_version() -> str:
    """The version of the fetched broker, from its jar name (e.g. ``4.4.0``)."""
    jar = next(kafka_libs().glob("kafka_2.13-*.jar"))
    return jar.stem.removeprefix("kafka_2.13-")


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaStartError("no java on PATH: the Kafka broker needs Java 17 or newer")
    return java


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one starting with ``-``: the storage tool would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def broker_log_summary(path: Path, lines: int = 25) -> str:
    """The ERROR/FATAL lines and the last ``lines`` lines of a broker log."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    errors = [line[:400] for line in text if " ERROR " in line or " FATAL " in line][-10:]
    return "\n".join((["errors:", *errors] if errors else []) + ["last lines:", *text[-lines:]])


def metadata_answered(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True if a broker at ``bootstrap`` (host:port) answers a metadata request with itself."""
    from confluent_kafka.admin import AdminClient

    host, port = bootstrap.rsplit(":", 1)
    try:  # a refused connection is cheap to see; the admin client would retry until its timeout
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _CLIENT_LOG})
    try:
        return bool(admin.list_topics(timeout=timeout_s).brokers)
    except Exception:
        return False


@dataclass
class KafkaBroker:
    """One local Kafka broker (KRaft, ``process.roles=broker,controller``) in ``state_dir``.

    Ports default to free ones on ``host``; a restart on the same state directory keeps them,
    so clients' bootstrap addresses stay valid. Use as a context manager or `start` / `stop`.
    """

    state_dir: Path = field(default_factory=default_state_dir)
    host: str = "127.0.0.1"
    port: int | None = None
    controller_port: int | None = None
    heap_mb: int = DEFAULT_HEAP_MB
    partitions: int = DEFAULT_PARTITIONS
    limits: MessageLimits = LIMITS
    extra_properties: dict[str, str] = field(default_factory=dict)
    stop_timeout_s: float = 30.0

    managed: ManagedProcess | None = field(default=None, init=False)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running broker JVM, None before `start` and after `stop`."""
        return None if self.managed is None else self.managed.process

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return Path(self.state_dir) / "data"

    @property
    def properties_path(self) -> Path:
        return Path(self.state_dir) / "server.properties"

    @property
    def log_path(self) -> Path:
        return Path(self.state_dir) / "broker.log"

    @property
    def state_path(self) -> Path:
        """``broker.json``: pid (null when stopped), ports, bootstrap, log."""
        return Path(self.state_dir) / "broker.json"

    def properties(self) -> dict[str, str]:
        """The broker's ``server.properties``."""
        listener = f"PLAINTEXT://{self.host}:{self.port}"
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"{listener},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": listener,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir.resolve()),
            "num.partitions": str(self.partitions),
            # One node: every internal topic has one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Consumers join a group at once instead of after the default 3 s.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            **self.limits.broker_properties(),
            **self.extra_properties,
        }

    def command(self, libs: Path) -> list[str]:
        """The JVM command line of the broker."""
        return [
            *self._java(libs, heap_mb=self.heap_mb),
            _MAIN_CLASS,
            str(self.properties_path.resolve()),
        ]

    def _java(self, libs: Path, heap_mb: int) -> list[str]:
        return [
            java_binary(),
            f"-Xms{heap_mb}m",
            f"-Xmx{heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_LOG4J_CONFIG}",
            "-cp",
            f"{libs}/*",
        ]

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        """Format storage on first start, launch, and block until a metadata request is answered.

        Raises `KafkaStartError` quoting the log if the JVM exits or never answers.
        """
        if self.managed is not None:
            raise KafkaStartError("broker already started")
        libs = kafka_libs()
        self.state_dir = Path(self.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._choose_ports()
        self.properties_path.write_text(
            "".join(f"{key}={value}\n" for key, value in self.properties().items())
        )
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(libs)
        self.managed = ManagedProcess(
            "Kafka broker",
            self.command(libs),
            self.log_path,
            cwd=self.state_dir,
            summary=broker_log_summary,
            error=KafkaStartError,
        ).start(banner=f"==== cvserve: starting broker on {self.bootstrap}\n", append=True)
        ready = partial(metadata_answered, self.bootstrap, timeout_s=min(5.0, timeout_s))
        try:
            self.managed.wait_ready(ready, timeout_s)
        except BaseException:
            self.stop()
            raise
        self._write_state(pid=self.managed.pid)
        return self

    def _choose_ports(self) -> None:
        previous = self.read_state(self.state_dir) or {}
        for attr in ("port", "controller_port"):
            wanted = getattr(self, attr)
            if wanted is None:
                earlier = previous.get(attr)
                reuse = earlier is not None and not port_in_use(int(earlier), self.host)
                setattr(self, attr, int(earlier) if reuse else free_port(self.host))
            elif port_in_use(wanted, self.host):
                raise KafkaStartError(f"{attr.replace('_', ' ')} {wanted} on {self.host} is in use")

    def _format_storage(self, libs: Path) -> None:
        command = [
            *self._java(libs, heap_mb=256),
            _STORAGE_TOOL,
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(self.properties_path.resolve()),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        with self.log_path.open("a") as log:
            log.write(f"==== cvserve: formatting {self.data_dir}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise KafkaStartError(f"formatting {self.data_dir} failed:\n{tail}")

    def is_running(self) -> bool:
        return self.managed is not None and self.managed.running()

    def stop(self) -> None:
        """SIGTERM the broker (a controlled shutdown), SIGKILL it if it outlives the timeout."""
        managed, self.managed = self.managed, None
        if managed is not None:
            managed.stop(self.stop_timeout_s)
            self._write_state(pid=None)

    def _write_state(self, pid: int | None) -> None:
        state = {
            "pid": pid,
            "bootstrap": self.bootstrap,
            "port": self.port,
            "controller_port": self.controller_port,
            "log": str(self.log_path),
            "properties": str(self.properties_path.resolve()),
        }
        self.state_path.write_text(json.dumps(state, indent=2) + "\n")

    @staticmethod
    def read_state(state_dir: Path) -> dict[str, object] | None:
        """The ``broker.json`` of ``state_dir``, or None if no broker ever started there."""
        try:
            return json.loads((Path(state_dir) / "broker.json").read_text())
        except FileNotFoundError:
            return None

    def __enter__(self) -> KafkaBroker:
        return self.start() if self.managed is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def running_pid(state_dir: Path) -> int | None:
    """The pid of the broker started in ``state_dir`` by any process, if it still runs.

    The pid is trusted only while its command line names this state's ``server.properties``
    (a pid may have been reused since).
    """
    state = KafkaBroker.read_state(state_dir)
    if not state or not state.get("pid"):
        return None
    pid = int(state["pid"])  # type: ignore[arg-type]
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if str(state["properties"]).encode() in cmdline else None


def stop_by_pid(state_dir: Path, timeout_s: float = 30.0) -> bool:
    """Stop the broker of ``state_dir`` that another process started: SIGTERM, then SIGKILL.

    Returns False if none was running.
    """
    pid = running_pid(state_dir)
    if pid is None:
        return False
    stop_pid(pid, timeout_s)
    state = KafkaBroker.read_state(state_dir) or {}
    state["pid"] = None
    (Path(state_dir) / "broker.json").write_text(json.dumps(state, indent=2) + "\n")
    return True
