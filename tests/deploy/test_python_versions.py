"""cvserve runs on Python 3.11 and 3.12: setup takes 3.12 when it runs, else 3.11, and Triton is
given the python-backend stub (and the LIBDIR) of the Python that launches it."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from cvserve.deploy import doctor, triton_install
from cvserve.deploy.triton import TritonServer
from cvserve.deploy.triton_install import TritonInstall

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "deploy" / "setup.sh"
SUPPORTED = [(3, 11), (3, 12)]


def fake_install(root: Path) -> TritonInstall:
    """A tritonserver layout whose stubs name their Python version."""
    install = TritonInstall(root=root / "tritonserver", libs=root / "libs")
    install.python_backend.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (install.python_backend / name).write_text(name)
    for major, minor in [(3, 10), *SUPPORTED, (3, 13)]:
        stub = install.root / "python_backend_stubs" / f"{major}.{minor}"
        stub.mkdir(parents=True)
        (stub / "triton_python_backend_stub").write_text(f"stub {major}.{minor}")
    return install


@pytest.mark.parametrize("version", SUPPORTED, ids=lambda v: f"{v[0]}.{v[1]}")
def test_the_stub_copied_is_the_running_pythons(
    version: tuple[int, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install = fake_install(tmp_path)
    monkeypatch.setattr(sys, "version_info", (*version, 0, "final", 0))
    backends = install.prepare_backends(tmp_path / "backends")
    copied = backends / "python" / "triton_python_backend_stub"
    assert copied.read_text() == f"stub {version[0]}.{version[1]}"
    stubs = install.root / "python_backend_stubs"
    assert install.stub_for() == stubs / f"{version[0]}.{version[1]}" / "triton_python_backend_stub"


@pytest.mark.parametrize("version", SUPPORTED, ids=lambda v: f"{v[0]}.{v[1]}")
def test_the_wheel_ships_a_stub_for_each_supported_python(version: tuple[int, int]) -> None:
    assert TritonInstall.discover().stub_for(version).is_file()


def test_triton_gets_the_running_pythons_libdir_and_venv() -> None:
    install = TritonInstall.discover()
    libdir = sysconfig.get_config_var("LIBDIR")
    assert install.library_path().split(":") == [str(install.libs), libdir]
    # The stub links libpython3.X.so.1.0 of the running Python: it is in that LIBDIR.
    assert (Path(libdir) / sysconfig.get_config_var("INSTSONAME")).exists()
    env = TritonServer(ROOT).environment()
    assert env["LD_LIBRARY_PATH"].split(":")[:2] == [str(install.libs), libdir]
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.prefix) / "bin")


def test_the_running_pythons_stub_finds_its_libraries() -> None:
    assert TritonInstall.discover().stub_problems() == []


def test_a_library_the_stub_cannot_find_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install = fake_install(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ldd = bin_dir / "ldd"
    ldd.write_text(
        "#!/bin/sh\n"
        "echo '\tlibcudart-09529672.so.12.6.77 => /x/libcudart-09529672.so.12.6.77 (0x0)'\n"
        "echo '\tlibpython3.12.so.1.0 => not found'\n"
    )
    ldd.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(triton_install, "python_libdir", lambda: "/nowhere/lib")
    (problem,) = install.stub_problems((3, 12))
    assert "needs libpython3.12.so.1.0, not found in LD_LIBRARY_PATH=" in problem
    assert "/nowhere/lib" in problem
    assert install.stub_problems((3, 99)) == [
        f"no python-backend stub at {install.stub_for((3, 99))}"
    ]


def test_doctor_checks_the_running_pythons_stub(capsys: pytest.CaptureFixture[str]) -> None:
    doctor.main()
    out = capsys.readouterr().out
    version = "{}.{}".format(*sys.version_info[:2])
    assert f"ok   python-backend stub for Python {version} " in out
    assert f"python_backend_stubs/{version}/triton_python_backend_stub" in out


def test_requires_python_setup_and_the_stubs_agree() -> None:
    specifier = SpecifierSet(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    allowed = [(3, minor) for minor in range(6, 20) if f"3.{minor}.0" in specifier]
    assert allowed == SUPPORTED
    assert sys.version_info[:2] in allowed


# --- deploy/setup.sh chooses the Python (fake interpreters: nothing is created or installed) ---


def fake_python(path: Path, version: str | None) -> Path:
    """An interpreter that reports ``version`` and fails at anything else; None: one that does
    not run (like a pyenv shim of a version not selected)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if version is None:
        path.write_text(
            '#!/bin/sh\necho "pyenv: $(basename $0): command not found" >&2\nexit 127\n'
        )
    else:
        path.write_text(f'#!/bin/sh\n[ "$1" = -c ] && echo {version} && exit 0\nexit 3\n')
    path.chmod(0o755)
    return path


def run_setup(
    tmp_path: Path, pythons: dict[str, str | None], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    for name, version in pythons.items():
        fake_python(bin_dir / name, version)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    environment |= {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CVSERVE_VENV": str(tmp_path / "venv"),
        **(env or {}),
    }
    return subprocess.run(
        ["bash", str(SETUP)], env=environment, capture_output=True, text=True, timeout=60
    )


NEEDS = "cvserve needs Python 3.11 or 3.12"
NO_PYTHON = {"python3.12": None, "python3.11": None, "python3": None}


@pytest.mark.parametrize(
    ("pythons", "chosen"),
    [
        ({**NO_PYTHON, "python3.12": "3.12", "python3.11": "3.11"}, "Python 3.12 (python3.12)"),
        ({**NO_PYTHON, "python3.11": "3.11"}, "Python 3.11 (python3.11)"),
        ({**NO_PYTHON, "python3": "3.12"}, "Python 3.12 (python3)"),
    ],
    ids=["3.12-first", "3.12-shim-does-not-run", "python3-is-3.12"],
)
def test_setup_takes_3_12_first_then_3_11(
    tmp_path: Path, pythons: dict[str, str | None], chosen: str
) -> None:
    result = run_setup(tmp_path, pythons)
    assert f"    {chosen}\n" in result.stdout
    # The fake stops setup at the next step: nothing was created.
    assert "FAILED at step: create virtualenv" in result.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize(
    ("pythons", "env", "error"),
    [
        (
            {**NO_PYTHON, "python3": "3.13"},
            {},
            f"{NEEDS}: none of python3.12, python3.11, python3 runs one",
        ),
        ({**NO_PYTHON, "py": "3.13"}, {"PYTHON": "py"}, f"{NEEDS}: py is Python 3.13"),
        ({**NO_PYTHON, "py": "3.10"}, {"PYTHON": "py"}, f"{NEEDS}: py is Python 3.10"),
        (NO_PYTHON, {"PYTHON": "python3.12"}, f"{NEEDS}: PYTHON=python3.12 does not run"),
    ],
    ids=["none-supported", "PYTHON-3.13", "PYTHON-3.10", "PYTHON-does-not-run"],
)
def test_setup_refuses_other_pythons_in_one_line(
    tmp_path: Path, pythons: dict[str, str | None], env: dict[str, str], error: str
) -> None:
    result = run_setup(tmp_path, pythons, env)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert lines[0].startswith(error), result.stderr
    # The error, then setup's own line naming the step.
    assert len(lines) == 2, result.stderr
    assert lines[1].startswith("cvserve setup FAILED at step: choose Python 3.12 or 3.11")
    assert not (tmp_path / "venv").exists()


def test_setup_keeps_an_existing_venvs_python(tmp_path: Path) -> None:
    fake_python(tmp_path / "venv" / "bin" / "python", "3.11")
    pythons = {**NO_PYTHON, "python3.12": "3.12", "python3.11": "3.11"}
    result = run_setup(tmp_path, pythons)
    assert "has Python 3.11: keeping it (remove it to switch to 3.12)" in result.stdout
    assert f"    Python 3.11 ({tmp_path}/venv/bin/python)\n" in result.stdout
    # The fake venv Python stops setup at the install step.
    assert "FAILED at step: install cvserve" in result.stderr
    # An explicit PYTHON of another version is refused, not ignored.
    result = run_setup(tmp_path, pythons, {"PYTHON": "python3.12"})
    assert result.returncode != 0
    assert f"{tmp_path}/venv has Python 3.11 but PYTHON=python3.12 is 3.12" in result.stderr
