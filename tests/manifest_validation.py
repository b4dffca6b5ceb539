"""Offline validation of generated deployment files: built-in Kubernetes kinds against
Kubernetes 1.37's schemas (kubernetes-validate), KEDA and Strimzi kinds against the OpenAPI v3
schemas of their CRDs bundled in deploy/k8s/schemas/, compose files against the compose spec."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

SCHEMAS = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "schemas"
KUBERNETES_VERSION = "1.37.0"


class ManifestInvalid(AssertionError):
    """A document its schema rejects; the message says where and why."""


def closed(schema: Any) -> Any:
    """``schema`` with every object that lists ``properties`` closed to others, as the API
    server's strict field validation (kubectl's default) refuses unknown fields; objects marked
    ``x-kubernetes-preserve-unknown-fields`` or with ``additionalProperties`` stay open."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: ({n: closed(s) for n, s in v.items()} if k == "properties" else closed(v))
        for k, v in schema.items()
    }
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → the bundled file (``source`` and ``openAPIV3Schema``)."""
    out = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        bundled = json.loads(path.read_text())
        out[bundled["apiVersion"], bundled["kind"]] = bundled
    return out


@cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = closed(copy.deepcopy(crd_schemas()[api_version, kind]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def validate_document(document: dict[str, Any]) -> None:
    """`ManifestInvalid` unless ``document`` validates: a custom resource against its CRD's
    schema, anything else with kubernetes-validate (strict: unknown fields are errors)."""
    key = (document.get("apiVersion"), document.get("kind"))
    if key in crd_schemas():
        errors = sorted(_crd_validator(*key).iter_errors(document), key=lambda e: list(e.path))
        if errors:
            raise ManifestInvalid(
                "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
            )
        return
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise ManifestInvalid(str(exc)) from exc


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema's verdict on ``path`` against the compose spec (returncode 0: valid)."""
    checker = Path(sys.prefix) / "bin" / "check-jsonschema"
    return subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )
