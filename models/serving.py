"""Serve a pipeline on the embedded local Triton: write its repository, start, stop."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from cvserve.deploy.triton import TritonServer
from cvserve.models.repository.local import write_repository
from cvserve.pipelines.spec import PipelineSpec


@contextlib.contextmanager
def serve_locally(
    specs: PipelineSpec | list[PipelineSpec],
    workdir: Path | None = None,
    timeout_s: float = 180.0,
    extra_args: Sequence[str] = (),
) -> Iterator[TritonServer]:
    """Write a repository of ``specs`` under ``workdir`` (a temporary one by default) and serve it
    on a local Triton (with ``extra_args``) until the block ends."""
    specs = [specs] if isinstance(specs, PipelineSpec) else specs
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvserve-")))
        workdir = Path(workdir)
        repository = workdir / "repository"
        write_repository(specs, repository)
        server = TritonServer(repository, workdir=workdir / "triton", extra_args=tuple(extra_args))
        server.start(timeout_s)
        stack.callback(server.stop)
        yield server
