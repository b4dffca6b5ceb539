"""Triton gRPC client TLS options: plain without a CA, TLS with one, mutual TLS with a pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvserve.deploy.triton_grpc import (
    TRITON_CA_ENV,
    TRITON_CERT_ENV,
    TRITON_KEY_ENV,
    TritonTls,
    TritonTlsError,
    grpc_tls_options,
)


def test_options_follow_the_variables(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("pem")
    assert grpc_tls_options({}) == {}
    assert grpc_tls_options({TRITON_CA_ENV: str(ca)}) == {
        "ssl": True,
        "root_certificates": str(ca),
    }
    mutual = {TRITON_CA_ENV: str(ca), TRITON_CERT_ENV: str(cert), TRITON_KEY_ENV: str(key)}
    assert grpc_tls_options(mutual) == {
        "ssl": True,
        "root_certificates": str(ca),
        "certificate_chain": str(cert),
        "private_key": str(key),
    }


@pytest.mark.parametrize(
    ("environ", "complaint"),
    [
        ({TRITON_CERT_ENV: "c.pem", TRITON_KEY_ENV: "k.pem"}, "need CVSERVE_TRITON_CA too"),
        ({TRITON_CA_ENV: "ca.pem", TRITON_CERT_ENV: "c.pem"}, "needs both"),
        ({TRITON_CA_ENV: "/no/such/ca.pem"}, "no such file"),
    ],
)
def test_unusable_combinations_are_named(environ: dict[str, str], complaint: str) -> None:
    with pytest.raises(TritonTlsError, match=complaint):
        grpc_tls_options(environ)


def test_server_arguments(tmp_path: Path) -> None:
    tls = TritonTls(tmp_path / "s.key", tmp_path / "s.pem", tmp_path / "ca.pem", mutual=True)
    assert tls.server_args() == [
        "--grpc-use-ssl=true",
        "--grpc-use-ssl-mutual=true",
        f"--grpc-server-cert={tmp_path / 's.pem'}",
        f"--grpc-server-key={tmp_path / 's.key'}",
        f"--grpc-root-cert={tmp_path / 'ca.pem'}",
    ]
