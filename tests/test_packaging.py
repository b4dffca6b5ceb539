"""Runtime dependencies are what cvserve imports to run; test tools, validators and exporters
are extras (``[test]``, ``[ngc]``, ``[dev]``) that the setup command installs."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("deploy", "pipelines", "preprocess", "models", "broker", "profiling")
# Provided by the Triton python-backend stub that runs the adapters, not by a distribution.
STUB_PROVIDED = {"triton_python_backend_utils"}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def dist_name(requirement: str) -> str:
    """The normalized distribution name (PEP 503: prometheus_client == prometheus-client)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower())


def module_level_imports(path: Path) -> set[str]:
    """Top-level package names imported at module level (what importing the module needs)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_test_tools_and_exporters_are_extras_not_runtime_dependencies() -> None:
    runtime = {dist_name(r) for r in project()["dependencies"]}
    extras = {k: {dist_name(r) for r in v} for k, v in project()["optional-dependencies"].items()}
    assert {"pytest", "kubernetes-validate", "check-jsonschema"} <= extras["test"]
    assert {"onnx", "onnxscript"} <= extras["ngc"]
    assert not runtime & set().union(*extras.values())


def test_every_module_level_import_of_the_package_is_a_runtime_dependency() -> None:
    runtime = {dist_name(r) for r in project()["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            for name in module_level_imports(path):
                if name in sys.stdlib_module_names or name in STUB_PROVIDED or name == "cvserve":
                    continue
                dists = {dist_name(d) for d in distributions.get(name, [])}
                if not dists & runtime:
                    missing[f"{path.relative_to(ROOT)}: {name}"] = sorted(dists)
    assert not missing, f"imports not covered by the runtime dependencies: {missing}"


def test_setup_installs_every_extra() -> None:
    setup = (ROOT / "deploy" / "setup.sh").read_text()
    (installed,) = re.findall(r'pip install --quiet -e "\$ROOT\[([a-z,]+)\]"', setup)
    assert set(installed.split(",")) == set(project()["optional-dependencies"])
