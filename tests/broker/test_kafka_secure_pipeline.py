"""A pipeline where every hop is authenticated: Kafka with SASL/SCRAM over mutual TLS, Triton's
gRPC over mutual TLS. cvserve's producer, worker and results reader work when given the
credentials; a client without its certificate is refused with one line naming the fix."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_testing import PIPELINE, WorkerUnderTest, small_jpegs

from cvserve.broker.clients import BrokerRefused, check_connection
from cvserve.broker.producer import ImageProducer
from cvserve.broker.results import ResultReader
from cvserve.broker.worker_processes import worker_command
from cvserve.deploy.kafka_client_config import CLIENT_CONFIG_ENV, write_properties
from cvserve.deploy.kafka_cluster import KafkaCluster
from cvserve.deploy.tls import LocalPki, write_local_pki
from cvserve.deploy.triton import TritonServer
from cvserve.deploy.triton_grpc import TritonTls
from cvserve.models.repository.local import write_repository
from cvserve.pipelines.spec import PipelineSpec

pytestmark = [pytest.mark.kafka, pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    return write_local_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    state = tmp_path_factory.mktemp("secure-kafka")
    with KafkaCluster(state, brokers=1, secure=True, mutual_tls=True, heap_mb=384) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tls_triton(
    classify_spec: PipelineSpec, pki: LocalPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    workdir = tmp_path_factory.mktemp("tls-triton")
    repository = write_repository(classify_spec, workdir / "repository")
    tls = TritonTls(pki.server_key, pki.server_chain, pki.ca, mutual=True)
    with TritonServer(repository, workdir=workdir / "server", tls=tls) as server:
        yield server


def test_every_hop_authenticated_end_to_end(
    secure_kafka: KafkaCluster,
    tls_triton: TritonServer,
    pki: LocalPki,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client_config = secure_kafka.client_config_path
    assert client_config is not None
    triton_tls = [
        "--triton-ca", str(pki.ca),
        "--triton-cert", str(pki.client_chain),
        "--triton-key", str(pki.client_key),
    ]  # fmt: skip
    stats = tmp_path / "worker.json"
    options = ["--client-config", str(client_config), *triton_tls, "--batch-size", "4"]
    command = worker_command(
        secure_kafka.bootstrap, namespace, PIPELINE, None, tls_triton.grpc_url, stats, options
    )
    worker = WorkerUnderTest.start(PIPELINE, command, stats)
    try:
        monkeypatch.setenv(CLIENT_CONFIG_ENV, str(client_config))
        with ImageProducer(secure_kafka.bootstrap, PIPELINE, namespace) as producer:
            ids = producer.submit(small_jpegs(4, first_seed=3000))
        with ResultReader(secure_kafka.bootstrap, PIPELINE, namespace) as reader:
            found = reader.collect(ids, timeout_s=180)
        assert sorted(found) == sorted(ids)
        assert worker.process.poll() is None, worker.log()[-2000:]
    finally:
        worker.managed.stop(timeout_s=0)

    # The same settings without the client certificate: the broker refuses the handshake.
    settings = secure_kafka.client_config()
    no_cert = {k: v for k, v in settings.items() if not k.startswith(("ssl.cert", "ssl.key"))}
    monkeypatch.setenv(CLIENT_CONFIG_ENV, str(write_properties(tmp_path / "c.properties", no_cert)))
    with pytest.raises(BrokerRefused, match="TLS handshake failed"):
        check_connection(secure_kafka.bootstrap, timeout_s=30)


def test_triton_over_mutual_tls_needs_the_ca_and_a_client_certificate(
    tls_triton: TritonServer, pki: LocalPki, tmp_path: Path
) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(small_jpegs(1, first_seed=3100)[0])

    def infer(*tls: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cvserve.pipelines.app.cli", "infer", "--url"]
        command += [tls_triton.grpc_url, "--pipeline", PIPELINE, *tls, str(image)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    answered = infer("--triton-ca", str(pki.ca), "--triton-cert", str(pki.client_chain),
                     "--triton-key", str(pki.client_key))  # fmt: skip
    assert answered.returncode == 0 and "photo.jpg" in answered.stdout, answered.stderr
    for refused in (infer(), infer("--triton-ca", str(pki.ca))):
        assert refused.returncode != 0
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "--triton-ca" in lines[0], refused.stdout + refused.stderr
