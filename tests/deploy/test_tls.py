"""The local PKI: a server certificate for loopback and a client certificate, both signed by the
CA, private keys readable by their owner only; made once."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cvserve.deploy.tls import write_local_pki


def test_certificates_chain_to_the_ca_and_name_loopback(tmp_path: Path) -> None:
    pki = write_local_pki(tmp_path / "pki", client_name="team-a")
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    for chain in (pki.server_chain, pki.client_chain):
        leaf, issuer = x509.load_pem_x509_certificates(chain.read_bytes())
        assert issuer == ca
        leaf.verify_directly_issued_by(ca)  # raises if the signature is not the CA's
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usages  # brokers are each other's clients
    server = x509.load_pem_x509_certificates(pki.server_chain.read_bytes())[0]
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    client = x509.load_pem_x509_certificates(pki.client_chain.read_bytes())[0]
    assert client.subject.rfc4514_string().startswith("CN=team-a")
    for key in (pki.server_key, pki.client_key):
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8

    before = pki.ca.read_bytes()
    assert write_local_pki(tmp_path / "pki").ca.read_bytes() == before  # kept, not remade
