"""Kafka client security settings: one file and librdkafka-named variables, checked on read."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvserve.deploy.kafka_client_config import (
    CLIENT_CONFIG_ENV,
    ClientConfigError,
    client_security,
    env_name,
    read_properties,
    write_properties,
)


def test_variables_override_the_file_and_only_security_settings_are_taken(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    path = tmp_path / "client.properties"
    path.write_text(
        "# a comment\n\nsecurity.protocol=SASL_SSL\nsasl.mechanism = SCRAM-SHA-512\n"
        f"sasl.username=team-a\nsasl.password=from-file\nssl.ca.location={ca}\n"
    )
    environ = {CLIENT_CONFIG_ENV: str(path), env_name("sasl.password"): "from-secret"}
    assert client_security(environ) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "team-a",
        "sasl.password": "from-secret",
        "ssl.ca.location": str(ca),
    }
    assert env_name("ssl.ca.location") == "CVSERVE_KAFKA_SSL_CA_LOCATION"
    assert client_security({}) == {}  # PLAINTEXT, librdkafka's default


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("acks=0\n", "acks is not a security setting"),
        ("sasl.username\n", ":1: not a key=value line"),
        ("security.protocol=TLS\n", "security.protocol=TLS: use one of"),
        ("ssl.ca.location=/no/such/ca.pem\n", "ssl.ca.location=/no/such/ca.pem: no such file"),
    ],
)
def test_unusable_settings_are_named(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "client.properties"
    path.write_text(text)
    with pytest.raises(ClientConfigError, match=complaint.replace(".", r"\.")):
        client_security({CLIENT_CONFIG_ENV: str(path)})


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClientConfigError, match="cannot read Kafka client config"):
        read_properties(tmp_path / "absent.properties")


def test_written_properties_are_private_and_read_back(tmp_path: Path) -> None:
    settings = {"security.protocol": "SASL_SSL", "sasl.password": "s3cret=with=equals"}
    path = write_properties(tmp_path / "c.properties", settings)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_properties(path) == settings
