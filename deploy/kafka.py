"""Run a real Apache Kafka 4.x broker locally: one KRaft node (broker and controller), bound to
127.0.0.1; `deploy.kafka_cluster` runs several as one cluster.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cvserve.deploy.kafka_client_config import client_security
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits
from cvserve.deploy.kafka_security import ADMIN_USER, SECURE_LISTENER, LocalSecurity
from cvserve.deploy.ports import free_port, port_in_use
from cvserve.deploy.process import ManagedProcess, ProcessStartError, stop_pid

KAFKA_HOME_ENV = "CVSERVE_KAFKA_HOME"
# librdkafka's lines while the broker is probed (refused connections) go here, not to stderr.
_CLIENT_LOG = logging.getLogger("cvserve.kafka.probe")
DEFAULT_HEAP_MB = 512
# Topics cvserve creates (and the broker's num.partitions): a few workers per stage share the
# load; a consumer group uses at most this many.
DEFAULT_PARTITIONS = 6
# The log cleaner's dedupe map, one heap array from start: Kafka's default 128 MiB was a third of
# a 384 MiB node, always live, so G1 marked concurrently at each humongous allocation (remark
# pauses of 25-100 ms). Only Kafka's own small topics compact; at least 1 MiB per cleaner thread.
DEDUPE_BUFFER_BYTES = 16 * 1024 * 1024
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


def metadata_answered(
    bootstrap: str,
    timeout_s: float = 5.0,
    client_config: Mapping[str, str] | None = None,
    brokers: int = 1,
) -> bool:
    """True if the broker at ``bootstrap`` (host:port) answers a metadata request naming at
    least ``brokers`` brokers. ``client_config``: librdkafka security settings (default: those
    of `client_security`)."""
    from confluent_kafka.admin import AdminClient

    host, port = bootstrap.rsplit(":", 1)
    try:  # a refused connection is cheap to see; the admin client would retry until its timeout
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    settings = client_security() if client_config is None else client_config
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _CLIENT_LOG, **settings})
    try:
        return len(admin.list_topics(timeout=timeout_s).brokers) >= brokers
    except Exception:
        return False


def replication_for(brokers: int) -> tuple[int, int]:
    """(replication factor, ``min.insync.replicas``) of topics on a cluster of ``brokers``:
    three copies at most, and an acknowledged record is on two of them whenever there are two."""
    replicas = max(1, min(3, brokers))
    return replicas, min(2, replicas)


@dataclass
class KafkaBroker:
    """One local Kafka node (KRaft, ``process.roles=broker,controller``) in ``state_dir``.

    Ports default to free ones on ``host``; a restart on the same state directory keeps them,
    so clients' bootstrap addresses stay valid. Use as a context manager or `start` / `stop`.
    Alone it is a cluster of one; `deploy.kafka_cluster.KafkaCluster` sets ``node_id``,
    ``quorum`` (every node's ``id@host:controller_port``), ``cluster_id`` and ``brokers`` to
    run several. ``security``: clients must use SASL/SCRAM over TLS (`LocalSecurity`).
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
    node_id: int = 1
    quorum: str | None = None
    cluster_id: str | None = None
    brokers: int = 1
    security: LocalSecurity | None = None

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

    @property
    def listener_name(self) -> str:
        """The clients' (and other brokers') listener: ``PLAINTEXT`` or ``SASL_SSL``."""
        return SECURE_LISTENER if self.security else "PLAINTEXT"

    def admin_config(self) -> dict[str, str]:
        """librdkafka settings of an admin client of this broker (the ``admin`` user if secure)."""
        return self.security.client_properties(ADMIN_USER) if self.security else {}

    def properties(self) -> dict[str, str]:
        """The broker's ``server.properties``."""
        listener = f"{self.listener_name}://{self.host}:{self.port}"
        replicas, min_isr = (str(n) for n in replication_for(self.brokers))
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum
            or f"{self.node_id}@{self.host}:{self.controller_port}",
            "listeners": f"{listener},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": listener,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": self.listener_name,
            "listener.security.protocol.map": f"{self.listener_name}:{self.listener_name},"
            "CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir.resolve()),
            "num.partitions": str(self.partitions),
            # Internal topics and topics created without settings, as cvserve creates its own.
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            # Consumers join a group at once instead of after the default 3 s.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.cleaner.dedupe.buffer.size": str(DEDUPE_BUFFER_BYTES),
            **self.limits.broker_properties(),
            **(self.security.broker_properties() if self.security else {}),
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
            # The fixed heap resident from the start: RSS then shows growth outside it (a leak),
            # not the heap's pages being touched for the first time (`cvserve bench soak`).
            "-XX:+AlwaysPreTouch",
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
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def launch(self) -> KafkaBroker:
        """Format storage on first start and start the JVM without waiting (the nodes of a
        cluster start together: none is ready before a majority of controllers runs)."""
        if self.managed is not None:
            raise KafkaStartError("broker already started")
        libs = kafka_libs()
        self.state_dir = Path(self.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.choose_ports()
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
        self._write_state(pid=self.managed.pid)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Block until this node answers metadata naming every broker of its cluster; stop it
        and raise `KafkaStartError` quoting its log if it exits or never does."""
        assert self.managed is not None, "broker not launched"
        ready = partial(
            metadata_answered,
            self.bootstrap,
            timeout_s=min(5.0, timeout_s),
            client_config=self.admin_config(),
            brokers=self.brokers,
        )
        try:
            self.managed.wait_ready(ready, timeout_s)
        except BaseException:
            self.stop()
            raise

    def choose_ports(self, taken: set[int] | None = None) -> None:
        """Free ports for those not given (the ones of an earlier start when still free, never
        one of ``taken``: other nodes' choices, not bound yet); `KafkaStartError` if a given one
        is in use."""
        previous = self.read_state(Path(self.state_dir)) or {}
        taken = set() if taken is None else taken
        for attr in ("port", "controller_port"):
            wanted = getattr(self, attr)
            if wanted is None:
                earlier = previous.get(attr)
                if earlier is not None and int(earlier) not in taken:
                    wanted = None if port_in_use(int(earlier), self.host) else int(earlier)
                while wanted is None or wanted in taken:
                    wanted = free_port(self.host)
                setattr(self, attr, wanted)
                taken.add(wanted)
            elif port_in_use(wanted, self.host):
                raise KafkaStartError(f"{attr.replace('_', ' ')} {wanted} on {self.host} is in use")

    def _format_storage(self, libs: Path) -> None:
        command = [
            *self._java(libs, heap_mb=256),
            _STORAGE_TOOL,
            "format",
            "--cluster-id",
            self.cluster_id or new_cluster_id(),
            "--config",
            str(self.properties_path.resolve()),
            *(self.security.format_arguments() if self.security else ()),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        with self.log_path.open("a") as log:
            log.write(f"==== cvserve: formatting {self.data_dir}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise KafkaStartError(f"formatting {self.data_dir} failed:\n{tail}")

    def is_running(self) -> bool:
        return self.managed is not None and self.managed.running()

    def terminate(self) -> None:
        """Ask the broker to stop (SIGTERM) without waiting; `stop` finishes the stop."""
        if self.managed is not None:
            self.managed.terminate()

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
