"""A private certificate authority for local servers on loopback (Kafka, Triton gRPC).

`write_local_pki` writes, with Python's ``cryptography``, a CA, a server certificate (SAN
127.0.0.1 and localhost; usable for server and client auth, because Kafka brokers are clients of
each other) and a client certificate for mutual TLS. All PEM; private keys PKCS#8, unencrypted,
mode 0600 (the JVM's PEM key store and librdkafka and gRPC all read that).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

LOOPBACK_NAMES = ("127.0.0.1", "localhost")
_CERT_DAYS = 825


@dataclass(frozen=True)
class LocalPki:
    """The files of one local PKI in ``directory``."""

    directory: Path

    @property
    def ca(self) -> Path:
        return Path(self.directory) / "ca.pem"

    @property
    def server_key(self) -> Path:
        return Path(self.directory) / "server.key"

    @property
    def server_chain(self) -> Path:
        """The server certificate followed by the CA's."""
        return Path(self.directory) / "server.pem"

    @property
    def client_key(self) -> Path:
        return Path(self.directory) / "client.key"

    @property
    def client_chain(self) -> Path:
        return Path(self.directory) / "client.pem"

    def exists(self) -> bool:
        paths = (self.ca, self.server_key, self.server_chain, self.client_key, self.client_chain)
        return all(p.is_file() for p in paths)


def private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def write_local_pki(directory: Path, client_name: str = "cvserve") -> LocalPki:
    """Make a CA and its server and client certificates in ``directory`` (kept if present)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki = LocalPki(Path(directory))
    if pki.exists():
        return pki
    pki.directory.mkdir(parents=True, exist_ok=True)
    pki.directory.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    pem = serialization.Encoding.PEM

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cvserve local"),
                x509.NameAttribute(NameOID.COMMON_NAME, common),
            ]
        )

    def builder(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name):
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_CERT_DAYS))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("cvserve local CA")
    ca_cert = (
        builder("cvserve local CA", ca_key, ca_name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(pem)
    pki.ca.write_bytes(ca_pem)

    def leaf(common: str, sans: list[x509.GeneralName], key_path: Path, chain_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        cert = builder(common, key, ca_name).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        cert = cert.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if sans:
            cert = cert.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        signed = cert.sign(ca_key, hashes.SHA256())
        private_file(
            key_path,
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )
        chain_path.write_bytes(signed.public_bytes(pem) + ca_pem)

    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(LOOPBACK_NAMES[0])),
        x509.DNSName(LOOPBACK_NAMES[1]),
    ]
    leaf("cvserve local server", sans, pki.server_key, pki.server_chain)
    leaf(client_name, [], pki.client_key, pki.client_chain)
    return pki
