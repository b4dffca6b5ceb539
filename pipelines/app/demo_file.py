"""`cvserve demo --file F`: a user's pipeline file end to end on a local Triton.

Builds the file's repository, starts the bundled Triton, answers generated images of several
sizes and formats (one line each, as `cvserve infer` prints them), prints where the time went
per model (Triton's statistics API), and stops the server.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from rich.console import Console

from cvserve.models.client import InferenceError, PipelineClient
from cvserve.models.serving import serve_locally
from cvserve.pipelines.app.demo import DEMO_IMAGES, split_table
from cvserve.pipelines.app.pipeline_args import class_names
from cvserve.pipelines.app.summary import summarize
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling import tritonstats


def run_file_demo(spec: PipelineSpec, workdir: Path | None = None) -> int:
    """0 when every image was answered, 1 otherwise."""
    console = Console(width=max(Console().width, 110))
    console.print(f"[bold]cvserve demo[/bold]: {spec.description}")
    names = class_names(spec)
    failed = 0
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvserve-demo-")))
        t0 = time.perf_counter()
        server = stack.enter_context(serve_locally(spec, workdir))
        console.print(f"Triton ready at {server.grpc_url} in {time.perf_counter() - t0:.1f} s")
        with PipelineClient(server.grpc_url, spec) as client:
            client.infer([synthetic_image(64, 64)])  # warm-up, not measured
            before = {m: tritonstats.fetch(client.triton, m) for m in spec.model_names}
            for seed, (width, height, fmt) in enumerate(DEMO_IMAGES):
                image = synthetic_image(width, height, seed, fmt)
                try:
                    start = time.perf_counter()
                    out = client.infer([image])
                    ms = (time.perf_counter() - start) * 1e3
                    console.print(
                        f"{width}x{height} {fmt} ({ms:.0f} ms): {summarize(out, 0, names)}"
                    )
                except InferenceError as exc:
                    failed += 1
                    console.print(f"{width}x{height} {fmt}: ERROR {exc}")
            console.print(split_table(client, spec, before))
    console.print("Stopped Triton.")
    return 1 if failed else 0
