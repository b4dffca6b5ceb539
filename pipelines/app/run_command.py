"""How every ``cvserve`` entry point runs a parsed command: Triton TLS options applied first, the
shipped composites' routes resolved for this machine, and a server that is absent or refuses us
(Kafka, Redis, Triton) or unusable client settings printed as one line, never a traceback."""

from __future__ import annotations

import argparse

from cvserve.broker.routes import register_composite
from cvserve.deploy.kafka_client_config import ClientConfigError
from cvserve.deploy.triton_grpc import TritonTlsError
from cvserve.pipelines.app.triton_tls_args import apply_triton_tls
from cvserve.pipelines.catalog import shipped_composites
from cvserve.pipelines.host import this_machine

ONE_LINE_ERRORS = (ConnectionError, ClientConfigError, TritonTlsError)


def run_command(args: argparse.Namespace, prog: str = "cvserve") -> int:
    """``args.func(args)``'s exit code; `SystemExit` with ``<prog>: <cause>`` for the errors
    above."""
    apply_triton_tls(args)
    # A shipped composite's stages start the workers `cvserve tune` stored on this machine
    # (`broker.routes` otherwise has the files' composites, which read no machine).
    for composite in shipped_composites(this_machine()).values():
        register_composite(composite)
    try:
        return int(args.func(args) or 0)
    except ONE_LINE_ERRORS as exc:
        raise SystemExit(f"{prog}: {exc}") from exc
