"""A local Kafka that requires what a shared cluster requires: SASL/SCRAM-SHA-512 over TLS
(optionally mutual TLS), with its certificates and users made at first start.

`LocalSecurity` owns a folder (``tls/`` of the broker state, mode 0700) holding a `LocalPki`
(CA, the brokers' certificate, a client certificate for mutual TLS), the brokers' PEM key store
(``broker-keystore.pem``: key then chain, what ``ssl.keystore.type=PEM`` reads) and
``credentials.json`` (the SCRAM passwords).

Users: ``admin`` is written into the cluster metadata when storage is formatted (the brokers
authenticate to each other with it, so it must exist before any broker runs); the clients' user
``cvserve`` is created through the admin API once the cluster answers (`upsert_scram_user`).
The controller listener stays PLAINTEXT on loopback: only the brokers' own quorum uses it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvserve.deploy.kafka_client_config import write_properties
from cvserve.deploy.tls import LocalPki, private_file, write_local_pki

SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
ADMIN_USER = "admin"
CLIENT_USER = "cvserve"
# The brokers' client listener when security is on (its name is its protocol).
SECURE_LISTENER = "SASL_SSL"


@dataclass(frozen=True)
class LocalSecurity:
    """The TLS material and SCRAM users of one local cluster, kept in ``directory``."""

    directory: Path
    mutual_tls: bool = False

    @property
    def pki(self) -> LocalPki:
        return LocalPki(Path(self.directory))

    @property
    def broker_keystore(self) -> Path:
        return Path(self.directory) / "broker-keystore.pem"

    @property
    def credentials_path(self) -> Path:
        return Path(self.directory) / "credentials.json"

    def ensure(self) -> LocalSecurity:
        """Make the PKI, key store and passwords unless they exist (a restart keeps them)."""
        pki = write_local_pki(Path(self.directory), client_name=CLIENT_USER)
        if not self.broker_keystore.exists():
            private_file(
                self.broker_keystore, pki.server_key.read_bytes() + pki.server_chain.read_bytes()
            )
        if not self.credentials_path.exists():
            passwords = {user: secrets.token_urlsafe(24) for user in (ADMIN_USER, CLIENT_USER)}
            private_file(self.credentials_path, json.dumps(passwords).encode())
        return self

    def password(self, user: str) -> str:
        return str(json.loads(self.credentials_path.read_text())[user])

    def format_arguments(self) -> list[str]:
        """Storage-tool arguments that write the ``admin`` user into the cluster metadata."""
        credential = f"{SCRAM_MECHANISM}=[name={ADMIN_USER},password={self.password(ADMIN_USER)}]"
        return ["--add-scram", credential]

    def broker_properties(self) -> dict[str, str]:
        """``server.properties`` entries for the ``SASL_SSL`` listener (clients and brokers)."""
        prefix = f"listener.name.{SECURE_LISTENER.lower()}.{SCRAM_MECHANISM.lower()}"
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN_USER}" password="{self.password(ADMIN_USER)}";'
        )
        return {
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"{prefix}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.broker_keystore.resolve()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.pki.ca.resolve()),
            # A SASL_SSL listener ignores the broker-wide ssl.client.auth: it must be prefixed.
            f"listener.name.{SECURE_LISTENER.lower()}.ssl.client.auth": "required"
            if self.mutual_tls
            else "none",
            "ssl.endpoint.identification.algorithm": "https",
        }

    def client_properties(self, user: str = CLIENT_USER) -> dict[str, str]:
        """librdkafka settings of a client authenticating as ``user``."""
        settings = {
            "security.protocol": SECURE_LISTENER,
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": user,
            "sasl.password": self.password(user),
            "ssl.ca.location": str(self.pki.ca.resolve()),
        }
        if self.mutual_tls:
            settings["ssl.certificate.location"] = str(self.pki.client_chain.resolve())
            settings["ssl.key.location"] = str(self.pki.client_key.resolve())
        return settings

    def write_client_properties(self, path: Path, user: str = CLIENT_USER) -> Path:
        return write_properties(path, self.client_properties(user))


def upsert_scram_user(admin: Any, user: str, password: str) -> None:
    """Create ``user`` (or reset its password) through the admin API of a running cluster."""
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upsert = UserScramCredentialUpsertion(user, info, password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)
