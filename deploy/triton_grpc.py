"""Every gRPC client cvserve makes to Triton, plain or over TLS, from one place.

TLS is on when a CA is given: ``$CVSERVE_TRITON_CA`` (PEM root certificate that signed the
server's), and for mutual TLS ``$CVSERVE_TRITON_CERT`` + ``$CVSERVE_TRITON_KEY`` (the client's
PEM certificate chain and key). The CLIs' ``--triton-ca/--triton-cert/--triton-key`` set those
variables, so the worker processes they start inherit them. The server side is `TritonTls`
(``tritonserver --grpc-use-ssl ...``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRITON_CA_ENV = "CVSERVE_TRITON_CA"
TRITON_CERT_ENV = "CVSERVE_TRITON_CERT"
TRITON_KEY_ENV = "CVSERVE_TRITON_KEY"


class TritonTlsError(ValueError):
    """TLS settings for Triton's gRPC endpoint that cannot be used; the message names them."""


class TritonUnreachable(ConnectionError):
    """Triton's gRPC endpoint did not answer (not there, or a TLS handshake that failed)."""


def unreachable(url: str, detail: str) -> TritonUnreachable:
    """The one-line error for a gRPC call answered UNAVAILABLE, naming what to check."""
    if grpc_tls_options():
        hint = (
            f"check it serves TLS with a certificate signed by ${TRITON_CA_ENV} (--triton-ca), "
            "and whether it requires a client certificate (--triton-cert/--triton-key)"
        )
    else:
        hint = (
            "is it running there? If it requires TLS, pass --triton-ca (and --triton-cert/"
            "--triton-key for mutual TLS)"
        )
    return TritonUnreachable(f"Triton at {url} did not answer over gRPC ({detail}): {hint}")


def grpc_tls_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``tritonclient.grpc.InferenceServerClient`` keyword arguments for TLS (empty: plain)."""
    environ = os.environ if environ is None else environ
    ca, cert, key = (environ.get(name) for name in (TRITON_CA_ENV, TRITON_CERT_ENV, TRITON_KEY_ENV))
    if not ca:
        if cert or key:
            raise TritonTlsError(f"{TRITON_CERT_ENV}/{TRITON_KEY_ENV} need {TRITON_CA_ENV} too")
        return {}
    if bool(cert) != bool(key):
        raise TritonTlsError(f"mutual TLS needs both {TRITON_CERT_ENV} and {TRITON_KEY_ENV}")
    for name, path in ((TRITON_CA_ENV, ca), (TRITON_CERT_ENV, cert), (TRITON_KEY_ENV, key)):
        if path and not Path(path).is_file():
            raise TritonTlsError(f"{name}={path}: no such file")
    options: dict[str, Any] = {"ssl": True, "root_certificates": ca}
    if cert:
        options.update(certificate_chain=cert, private_key=key)
    return options


def grpc_client(url: str, **kwargs: Any) -> Any:
    """A ``tritonclient.grpc.InferenceServerClient`` to ``url`` (host:port), over TLS when
    configured (`grpc_tls_options`)."""
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url, **grpc_tls_options(), **kwargs)


def set_tls_environment(ca: str | None, cert: str | None = None, key: str | None = None) -> None:
    """What ``--triton-ca/--triton-cert/--triton-key`` say, as the variables clients read."""
    for name, value in ((TRITON_CA_ENV, ca), (TRITON_CERT_ENV, cert), (TRITON_KEY_ENV, key)):
        if value:
            os.environ[name] = str(Path(value).resolve())


@dataclass(frozen=True)
class TritonTls:
    """The server's side: its PEM key and certificate chain, the CA its clients' certificates
    must chain to, and whether it requires them (``mutual``)."""

    server_key: Path
    server_chain: Path
    ca: Path
    mutual: bool = False

    def server_args(self) -> list[str]:
        return [
            "--grpc-use-ssl=true",
            f"--grpc-use-ssl-mutual={'true' if self.mutual else 'false'}",
            f"--grpc-server-cert={Path(self.server_chain).resolve()}",
            f"--grpc-server-key={Path(self.server_key).resolve()}",
            f"--grpc-root-cert={Path(self.ca).resolve()}",
        ]
