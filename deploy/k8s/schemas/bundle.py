"""Write the OpenAPI v3 schemas of the custom resources cvserve generates, from their projects'
CRD files at a release tag, as JSON beside this script (what `tests/deploy` validates against).

Usage: ``python deploy/k8s/schemas/bundle.py KEDA_GIT_DIR STRIMZI_GIT_DIR`` — two clones (bare
is fine) of github.com/kedacore/keda and github.com/strimzi/strimzi-kafka-operator holding the
tags below. Only the served version cvserve writes is kept, ``description`` texts are dropped
(documentation, not constraints); every file names its source repository, path, tag and commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

# (repository, tag, path in it, version cvserve writes)
SOURCES = {
    "keda": ("kedacore/keda", "v2.20.2"),
    "strimzi": ("strimzi/strimzi-kafka-operator", "1.2.0"),
}
CRDS = (
    ("keda", "config/crd/bases/keda.sh_scaledobjects.yaml", "v1alpha1"),
    ("keda", "config/crd/bases/keda.sh_triggerauthentications.yaml", "v1alpha1"),
    ("strimzi", "install/cluster-operator/040-Crd-kafka.yaml", "v1"),
    ("strimzi", "install/cluster-operator/043-Crd-kafkatopic.yaml", "v1"),
    ("strimzi", "install/cluster-operator/044-Crd-kafkauser.yaml", "v1"),
    ("strimzi", "install/cluster-operator/045-Crd-kafkanodepool.yaml", "v1"),
)


def _without_descriptions(schema: Any) -> Any:
    """``schema`` minus the ``description`` keywords (a property named so is kept)."""
    if isinstance(schema, list):
        return [_without_descriptions(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "description" and isinstance(value, str):
            continue
        if key == "properties":
            out[key] = {name: _without_descriptions(s) for name, s in value.items()}
        else:
            out[key] = _without_descriptions(value)
    return out


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True
    ).stdout


def bundle(git_dirs: dict[str, Path]) -> list[Path]:
    written = []
    for project, path, version in CRDS:
        repo, tag = SOURCES[project]
        git_dir = git_dirs[project]
        commit = _git(git_dir, "rev-parse", f"{tag}^{{commit}}").strip()
        crd = yaml.safe_load(_git(git_dir, "show", f"{commit}:{path}"))
        (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        document = {
            "apiVersion": f"{group}/{version}",
            "kind": kind,
            "source": {
                "repository": f"https://github.com/{repo}",
                "path": path,
                "release": tag,
                "commit": commit,
                "note": "openAPIV3Schema of this version only; description texts removed",
            },
            "openAPIV3Schema": _without_descriptions(served["schema"]["openAPIV3Schema"]),
        }
        out = HERE / f"{kind.lower()}-{group}-{version}.json"
        out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        written.append(out)
    return written


if __name__ == "__main__":
    keda, strimzi = (Path(a) for a in sys.argv[1:3])
    for written in bundle({"keda": keda, "strimzi": strimzi}):
        print(f"wrote {written}")
