"""``--triton-ca/--triton-cert/--triton-key``: Triton's gRPC endpoint over TLS for any command
that talks to a running Triton (worker, infer, profile, bench loadgen)."""

from __future__ import annotations

import argparse

from cvserve.deploy.triton_grpc import TRITON_CA_ENV, TRITON_CERT_ENV, set_tls_environment


def add_triton_tls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--triton-ca",
        default=None,
        metavar="PEM",
        help=f"gRPC over TLS: the CA that signed Triton's certificate (default ${TRITON_CA_ENV})",
    )
    parser.add_argument(
        "--triton-cert",
        default=None,
        metavar="PEM",
        help=f"mutual TLS: this client's certificate chain (default ${TRITON_CERT_ENV})",
    )
    parser.add_argument(
        "--triton-key", default=None, metavar="PEM", help="mutual TLS: this client's key"
    )


def apply_triton_tls(args: argparse.Namespace) -> None:
    """Make the options what every Triton client of this process and its children reads."""
    if getattr(args, "triton_ca", None) or getattr(args, "triton_cert", None):
        set_tls_environment(args.triton_ca, args.triton_cert, args.triton_key)
