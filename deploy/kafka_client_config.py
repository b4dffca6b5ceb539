"""How every cvserve Kafka client authenticates: one place, librdkafka's own property names.

A cluster shared by teams requires SASL and TLS. cvserve's clients (producer, stage worker,
results reader, admin, lag) take their security settings from, in order of precedence:

1. environment variables ``CVSERVE_KAFKA_<NAME>``, ``<NAME>`` being the librdkafka property in
   upper case with ``.`` → ``_`` (``CVSERVE_KAFKA_SASL_PASSWORD`` for ``sasl.password``): what a
   Kubernetes Secret mounts as environment;
2. a client-properties file (``key=value`` lines, ``#`` comments, librdkafka names) named by
   ``$CVSERVE_KAFKA_CLIENT_CONFIG`` (the CLIs' ``--client-config`` sets it, so the worker
   processes they start inherit it). ``cvserve kafka start --secure`` writes one.

Only security settings are taken (`SECURITY_SETTINGS`): acks, idempotence and record sizes are
cvserve's promises, not the user's to loosen from a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CLIENT_CONFIG_ENV = "CVSERVE_KAFKA_CLIENT_CONFIG"
ENV_PREFIX = "CVSERVE_KAFKA_"
SECURITY_SETTINGS = (
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
)
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class ClientConfigError(ValueError):
    """A client-properties file or variable cvserve cannot use; the message names it."""


def env_name(setting: str) -> str:
    """``sasl.password`` → ``CVSERVE_KAFKA_SASL_PASSWORD``."""
    return ENV_PREFIX + setting.upper().replace(".", "_")


def read_properties(path: Path) -> dict[str, str]:
    """The ``key=value`` lines of a properties file (blank lines and ``#``/``!`` comments
    skipped); `ClientConfigError` naming the line for anything else or a setting cvserve does not
    take."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ClientConfigError(f"cannot read Kafka client config {path}: {exc.strerror}") from exc
    settings: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text[0] in "#!":
            continue
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ClientConfigError(f"{path}:{number}: not a key=value line")
        if key not in SECURITY_SETTINGS:
            raise ClientConfigError(
                f"{path}:{number}: {key} is not a security setting cvserve takes from a file "
                f"(one of {', '.join(SECURITY_SETTINGS)})"
            )
        settings[key] = value.strip()
    return settings


def write_properties(path: Path, settings: Mapping[str, str]) -> Path:
    """Write ``settings`` as a properties file readable by its owner only (it holds secrets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    return path


def client_security(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The security settings every cvserve client gets (empty: PLAINTEXT, librdkafka's default).

    Raises `ClientConfigError` for an unreadable file, an unknown setting in it or an unknown
    ``security.protocol``; files named in it (CA, certificate, key) must exist.
    """
    environ = os.environ if environ is None else environ
    settings: dict[str, str] = {}
    path = environ.get(CLIENT_CONFIG_ENV)
    if path:
        settings.update(read_properties(Path(path)))
    for setting in SECURITY_SETTINGS:
        value = environ.get(env_name(setting))
        if value:
            settings[setting] = value
    protocol = settings.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ClientConfigError(
            f"security.protocol={settings['security.protocol']}: use one of "
            f"{', '.join(SECURITY_PROTOCOLS)}"
        )
    for setting in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
        if setting in settings and not Path(settings[setting]).is_file():
            raise ClientConfigError(f"{setting}={settings[setting]}: no such file")
    return settings
