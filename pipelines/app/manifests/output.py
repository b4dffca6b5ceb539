"""Writing generated documents as YAML files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """No ``&anchors``: a dict used twice (a Deployment's labels) is written out twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(document: Any) -> str:
    """YAML in the documents' own key order (as readable as the hand-written manifests)."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100)


def write_documents(documents: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """One file per object in ``out``, ``NN-<kind>-<name>.yaml``: ``kubectl apply -f out`` takes
    them in name order, which is the documents' order. Stale files of an earlier run are removed
    (only ``NN-*.yaml``, what this writes) so the folder is exactly this deployment."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("[0-9][0-9]-*.yaml"):
        stale.unlink()
    written = []
    for index, document in enumerate(documents):
        kind, name = document["kind"].lower(), document["metadata"]["name"]
        path = out / f"{index:02d}-{kind}-{name}.yaml"
        path.write_text(dump(document))
        written.append(path)
    return written
