"""Starting and stopping the real tritonserver: every trap fails fast, naming its cause."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from cvserve.deploy import triton as triton_module
from cvserve.deploy.triton import TritonServer, TritonStartError
from cvserve.deploy.triton_install import TritonInstall, TritonInstallError

pytestmark = pytest.mark.server

BROKEN_MODEL = """
raise ImportError("this model is broken on purpose")
"""
BROKEN_CONFIG = """
name: "broken"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""
TINY_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())
        ]) for r in requests]
"""


def write_model(repository: Path, name: str, code: str) -> Path:
    (repository / name / "1").mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(BROKEN_CONFIG.replace("broken", name))
    (repository / name / "1" / "model.py").write_text(code)
    return repository


def test_port_taken_fails_before_launch(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "tiny", TINY_MODEL)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = TritonServer(tmp_path / "repo", workdir=tmp_path / "w", grpc_port=port)
        started = time.monotonic()
        with pytest.raises(
            TritonStartError, match=f"grpc port {port} on 127.0.0.1 is already in use"
        ):
            server.start()
        assert time.monotonic() - started < 5
        assert server.process is None


def test_missing_stub_is_named_before_launch(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "tiny", TINY_MODEL)
    server = TritonServer(tmp_path / "repo", workdir=tmp_path / "w", python_version=(3, 99))
    with pytest.raises(TritonInstallError, match="no python-backend stub for Python 3.99"):
        server.start()
    assert server.process is None


def test_numpy_2_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_module.importlib.metadata, "version", lambda _: "2.1.0")
    with pytest.raises(TritonStartError, match="NumPy 2.1.0 is installed"):
        TritonServer(tmp_path, workdir=tmp_path / "w").start()


def test_model_that_fails_to_load_stops_the_start_and_quotes_the_log(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "broken", BROKEN_MODEL)
    server = TritonServer(tmp_path / "repo", workdir=tmp_path / "w")
    with pytest.raises(TritonStartError, match="this model is broken on purpose") as error:
        server.start(timeout_s=60)
    assert "exited with code" in str(error.value)
    assert server.process is None


def test_stub_without_its_libraries_fails_fast_instead_of_hanging(tmp_path: Path) -> None:
    # Without LD_LIBRARY_PATH the stub dies on libcudart and Triton would wait for it forever.
    write_model(tmp_path / "repo", "tiny", TINY_MODEL)
    server = TritonServer(tmp_path / "repo", workdir=tmp_path / "w", env={"LD_LIBRARY_PATH": ""})
    started = time.monotonic()
    with pytest.raises(TritonStartError, match="error while loading shared libraries: libcudart"):
        server.start(timeout_s=60)
    assert time.monotonic() - started < 30
    assert server.process is None


def test_readiness_deadline_ends_the_wait_and_cleans_up(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "tiny", TINY_MODEL)
    server = TritonServer(tmp_path / "repo", workdir=tmp_path / "w")
    with pytest.raises(TritonStartError, match="not ready after 0 s"):
        server.start(timeout_s=0.3)
    assert server.process is None
    assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))


STUCK_MODEL = """
import threading
from pathlib import Path

import cvserve.models.triton  # registers the SIGUSR1 stack dump


class TritonPythonModel:
    def initialize(self, args):
        Path(args["model_repository"], "entered").touch()
        threading.Event().wait()  # a load that never ends
"""


def test_a_model_stuck_loading_is_named_with_where_its_stub_was(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "tiny", TINY_MODEL)
    write_model(tmp_path / "repo", "stuck", STUCK_MODEL)
    server = TritonServer(tmp_path / "repo", workdir=tmp_path / "w")
    with pytest.raises(TritonStartError, match="not ready after 45 s") as error:
        server.start(timeout_s=45)
    assert (tmp_path / "repo" / "stuck" / "entered").exists(), "the stub never ran initialize"
    message = str(error.value)
    assert "still loading: stuck\n" in message
    assert re.search(r'File ".*stuck/1/model.py", line 11 in initialize', message)
    assert re.search(r"\nmemory available: [0-9.]+ of [0-9.]+ GiB$", message)
    assert server.process is None


def test_start_serve_stop_removes_only_its_own_shared_memory(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "tiny", TINY_MODEL)
    foreign = Path("/dev/shm") / f"someone_else_{os.getpid()}"
    foreign.write_bytes(b"keep me")
    try:
        with TritonServer(tmp_path / "repo", workdir=tmp_path / "w") as server:
            assert server.is_ready()
            pid = server.process.pid
            assert list(Path("/dev/shm").glob(f"{server.shm_prefix}*")), "stub regions expected"
            client = server.grpc_client()
            assert client.is_model_ready("tiny")
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # the whole process group is gone
        assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
        assert foreign.exists()
    finally:
        foreign.unlink()


def test_library_path_names_the_bundled_libraries() -> None:
    install = TritonInstall.discover()
    assert str(install.libs) in install.library_path().split(":")
    assert any(p.name.startswith("libcudart") for p in install.libs.iterdir())
