"""How every ``cvserve`` entry point runs a parsed command: Triton TLS options applied first, and
a server that is absent or refuses us (Kafka, Redis, Triton) or unusable client settings printed
as one line, never a traceback."""

from __future__ import annotations

import argparse
import signal
import threading

from cvserve.deploy.kafka_client_config import ClientConfigError
from cvserve.deploy.triton_grpc import TritonTlsError
from cvserve.pipelines.app.triton_tls_args import apply_triton_tls

ONE_LINE_ERRORS = (ConnectionError, ClientConfigError, TritonTlsError)


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C): a long-running command's stop."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_command(args: argparse.Namespace, prog: str = "cvserve") -> int:
    """``args.func(args)``'s exit code; `SystemExit` with ``<prog>: <cause>`` for the errors
    above."""
    apply_triton_tls(args)
    try:
        return int(args.func(args) or 0)
    except ONE_LINE_ERRORS as exc:
        raise SystemExit(f"{prog}: {exc}") from exc
