"""Where the tritonserver 2.51 binary shipped in the `nvidia-pytriton` wheel and its parts live.

pytriton is used only as a carrier of the real binary; cvserve launches it itself
(see `cvserve.deploy.triton.TritonServer`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

# The python backend's per-model process (one per model instance), as shipped and as run.
STUB_NAME = "triton_python_backend_stub"


def python_libdir() -> str:
    """LIBDIR of the running Python (the base installation's, also inside a venv)."""
    return sysconfig.get_config_var("LIBDIR") or ""


def stub_model(pid: int) -> str | None:
    """The model folder a python-backend stub ``pid`` serves (its argv[1] is
    ``<repository>/<model>/<version>/model.py``); None for any other process or one that ended."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if Path(argv[0].decode(errors="replace")).name != STUB_NAME or len(argv) < 2:
        return None
    return Path(argv[1].decode(errors="replace")).parents[1].name


class TritonInstallError(RuntimeError):
    """The bundled Triton server is missing a part it needs to run."""


@dataclass(frozen=True)
class TritonInstall:
    """Paths of one tritonserver installation."""

    root: Path  # site-packages/pytriton/tritonserver
    libs: (
        Path  # site-packages/nvidia_pytriton.libs (bundled shared libraries, libcudart among them)
    )

    @classmethod
    def discover(cls) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonInstallError("nvidia-pytriton is not installed: run ./deploy/setup.sh")
        package = Path(next(iter(spec.submodule_search_locations)))
        install = cls(root=package / "tritonserver", libs=package.parent / "nvidia_pytriton.libs")
        for path in (install.binary, install.python_backend, install.libs):
            if not path.exists():
                raise TritonInstallError(f"tritonserver install incomplete: {path} is missing")
        return install

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    def stub_for(self, version: tuple[int, int] | None = None) -> Path:
        """The python-backend stub built for Python ``version`` (default: the running Python).

        The stub embeds that Python (it links ``libpython3.X.so``) and runs the models with the
        packages of the environment whose ``python3`` is first on PATH, so it must be the stub of
        the interpreter that launches Triton."""
        major, minor = version or sys.version_info[:2]
        stubs = self.root / "python_backend_stubs"
        return stubs / f"{major}.{minor}" / STUB_NAME

    def library_path(self) -> str:
        """LD_LIBRARY_PATH the server and its stubs need (without it a stub dies on libcudart
        and the server waits for it forever): the bundled libraries, then the running Python's
        LIBDIR (where its ``libpython3.X.so.1.0`` lives)."""
        parts = [str(self.libs), python_libdir()]
        return ":".join(p for p in parts if p)

    def stub_problems(self, version: tuple[int, int] | None = None) -> list[str]:
        """What keeps the stub for ``version`` (default: the running Python) from starting with
        `library_path`: a missing stub, or shared libraries it needs that are not found (for the
        running Python, ``libpython3.X.so.1.0`` must be in its LIBDIR: a Python built without
        ``--enable-shared`` has none). Empty when it can start."""
        stub = self.stub_for(version)
        if not stub.exists():
            return [f"no python-backend stub at {stub}"]
        if shutil.which("ldd") is None:
            return []
        result = subprocess.run(
            ["ldd", str(stub)],
            env={**os.environ, "LD_LIBRARY_PATH": self.library_path()},
            capture_output=True,
            text=True,
            check=False,
        )
        missing = [
            line.split("=>")[0].strip()
            for line in result.stdout.splitlines()
            if "not found" in line
        ]
        return [
            f"{stub} needs {name}, not found in LD_LIBRARY_PATH={self.library_path()}"
            for name in missing
        ]

    def prepare_backends(
        self, directory: Path, python_version: tuple[int, int] | None = None
    ) -> Path:
        """Write a backend directory whose ``python/`` holds the backend and the stub for
        ``python_version`` (default: the running Python). Returns ``directory``."""
        version = python_version or sys.version_info[:2]
        stub = self.stub_for(version)
        if not stub.exists():
            raise TritonInstallError(
                f"no python-backend stub for Python {version[0]}.{version[1]} at {stub}; "
                f"every python model would fail with '{STUB_NAME} is not found'"
            )
        target = directory / "python"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(self.python_backend / name, target / name)
        shutil.copy2(stub, target / STUB_NAME)
        return directory
