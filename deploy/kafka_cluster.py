"""A local Kafka cluster: N KRaft nodes on loopback, each broker and controller (combined roles).

Three nodes is the smallest cluster that survives losing one: the controller quorum keeps a
majority, and topics get replication factor min(3, N) with ``min.insync.replicas`` min(2, RF)
(`deploy.kafka.replication_for`), so an acknowledged record (acks=all) is on two nodes. Combined
roles rather than split controllers: three JVMs of a fixed heap instead of six, beside Triton.

Layout of ``state_dir``: ``cluster.json`` (node folders, bootstrap list, whether security is on,
the client-properties file), one folder per node (``node-1`` …; a cluster of one uses
``state_dir`` itself, as `KafkaBroker` always did), ``tls/`` and ``client.properties`` when
secure. Every node keeps its ports across restarts, so the bootstrap list stays valid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvserve.deploy.kafka import (
    DEFAULT_HEAP_MB,
    DEFAULT_PARTITIONS,
    KafkaBroker,
    KafkaStartError,
    default_state_dir,
    new_cluster_id,
    running_pid,
    stop_by_pid,
)
from cvserve.deploy.kafka_security import ADMIN_USER, CLIENT_USER, LocalSecurity, upsert_scram_user

CLUSTER_FILE = "cluster.json"
CLIENT_PROPERTIES = "client.properties"


@dataclass
class KafkaCluster:
    """``brokers`` local Kafka nodes in ``state_dir`` (``secure``: SASL/SCRAM over TLS,
    ``mutual_tls``: clients also present a certificate). ``port``: the first node's client port
    (default free). ``extra_properties``: ``server.properties`` entries of every node. Use as a
    context manager or `start` / `stop`."""

    state_dir: Path = field(default_factory=default_state_dir)
    brokers: int = 1
    host: str = "127.0.0.1"
    heap_mb: int = DEFAULT_HEAP_MB
    partitions: int = DEFAULT_PARTITIONS
    secure: bool = False
    mutual_tls: bool = False
    port: int | None = None
    extra_properties: dict[str, str] = field(default_factory=dict)
    nodes: list[KafkaBroker] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if self.brokers < 1:
            raise KafkaStartError(f"--brokers {self.brokers}: a cluster needs at least one")
        earlier = read_cluster(self.state_dir)
        if earlier and int(earlier["brokers"]) != self.brokers:
            raise KafkaStartError(
                f"{self.state_dir} holds a cluster of {earlier['brokers']} broker(s): start it "
                f"with --brokers {earlier['brokers']}, or use another --state-dir"
            )
        if earlier and bool(earlier["secure"]) != self.secure:
            wanted = "with" if earlier["secure"] else "without"
            raise KafkaStartError(
                f"{self.state_dir} holds a cluster made {wanted} --secure: start it that way, or "
                "use another --state-dir"
            )
        security = LocalSecurity(self.state_dir / "tls", self.mutual_tls) if self.secure else None
        self.nodes = [
            KafkaBroker(
                self.node_dir(n),
                host=self.host,
                port=self.port if n == 1 else None,
                heap_mb=self.heap_mb,
                partitions=self.partitions,
                node_id=n,
                brokers=self.brokers,
                security=security,
                extra_properties=self.extra_properties,
            )
            for n in range(1, self.brokers + 1)
        ]

    def node_dir(self, node_id: int) -> Path:
        return self.state_dir if self.brokers == 1 else self.state_dir / f"node-{node_id}"

    @property
    def security(self) -> LocalSecurity | None:
        return self.nodes[0].security

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated (librdkafka's ``bootstrap.servers``)."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def client_config_path(self) -> Path | None:
        """The client-properties file of the ``cvserve`` user (secure clusters only)."""
        return self.state_dir / CLIENT_PROPERTIES if self.secure else None

    def client_config(self) -> dict[str, str]:
        """librdkafka security settings of cvserve's clients (empty when not secure)."""
        return self.security.client_properties(CLIENT_USER) if self.security else {}

    def admin_config(self) -> dict[str, str]:
        return self.nodes[0].admin_config()

    def start(self, timeout_s: float = 120.0) -> KafkaCluster:
        """Make the TLS material and users (secure), format each node on first start, launch
        them together and block until each answers naming all of them. Raises `KafkaStartError`
        quoting the failing node's log (the others are stopped)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.security:
            self.security.ensure()
        earlier = read_cluster(self.state_dir) or {}
        cluster_id = str(earlier.get("cluster_id") or new_cluster_id())
        taken: set[int] = set()
        for node in self.nodes:
            node.cluster_id = cluster_id
            node.choose_ports(taken)
        quorum = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)
        try:
            for node in self.nodes:
                node.quorum = quorum
                node.launch()
            for node in self.nodes:
                node.wait_ready(timeout_s)
            if self.security:
                self._create_client_user()
        except BaseException:
            self.stop()
            raise
        self._write_state(cluster_id)
        return self

    def _create_client_user(self) -> None:
        from confluent_kafka.admin import AdminClient

        assert self.security is not None
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self.admin_config()})
        upsert_scram_user(admin, CLIENT_USER, self.security.password(CLIENT_USER))
        self.security.write_client_properties(self.state_dir / CLIENT_PROPERTIES)

    def _write_state(self, cluster_id: str) -> None:
        state = {
            "brokers": self.brokers,
            "cluster_id": cluster_id,
            "bootstrap": self.bootstrap,
            "nodes": [str(node.state_dir) for node in self.nodes],
            "secure": self.secure,
            "mutual_tls": self.mutual_tls,
            "client_config": str(self.client_config_path) if self.client_config_path else None,
            "admin_user": ADMIN_USER if self.secure else None,
        }
        (self.state_dir / CLUSTER_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (a crash, no controlled shutdown)."""
        node = self.nodes[node_id - 1]
        if node.process is not None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(timeout=30)
        node.stop()  # reaps its process group, marks it stopped in its state file

    def restart(self, node_id: int, timeout_s: float = 120.0) -> KafkaBroker:
        """Start node ``node_id`` again on its data and ports; returns once it answers."""
        node = self.nodes[node_id - 1]
        node.launch()
        node.wait_ready(timeout_s)
        return node

    def stop(self) -> None:
        """Stop every node (SIGTERM: a controlled shutdown; SIGKILL after its timeout)."""
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_cluster(state_dir: Path) -> dict[str, Any] | None:
    """What ``cluster.json`` of ``state_dir`` says; a lone broker's ``broker.json`` (started
    before clusters existed) reads as a cluster of one; None if nothing ever started there."""
    path = Path(state_dir) / CLUSTER_FILE
    if path.exists():
        return json.loads(path.read_text())
    broker = KafkaBroker.read_state(Path(state_dir))
    if broker is None:
        return None
    return {
        "brokers": 1,
        "bootstrap": broker["bootstrap"],
        "nodes": [str(state_dir)],
        "secure": False,
        "client_config": None,
    }


def node_pids(state_dir: Path) -> dict[Path, int | None]:
    """Each node folder of the cluster in ``state_dir`` and its running pid (None: stopped)."""
    cluster = read_cluster(state_dir) or {"nodes": []}
    return {Path(node): running_pid(Path(node)) for node in cluster["nodes"]}


def stop_cluster(state_dir: Path, timeout_s: float = 30.0) -> int:
    """Stop every running node of the cluster in ``state_dir`` by pid; returns how many ran.
    All are asked at once: a node stopping alone waits for a quorum the others provide."""
    pids = node_pids(state_dir)
    for pid in pids.values():
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    for node in pids:
        stop_by_pid(node, timeout_s)  # waits, kills what outlives the timeout, marks it stopped
    return sum(pid is not None for pid in pids.values())
