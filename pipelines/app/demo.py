"""`cvserve demo`: the main job end to end on the embedded default.

Builds the repository (classify, detect, identify), starts a local Triton and a local Kafka,
sends generated images of several sizes and formats to classify and prints the answers and a
first latency table, then runs detect_identify across Kafka with one worker per stage, and stops
everything it started.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cvserve.deploy.kafka import KafkaBroker
from cvserve.models.client import PipelineClient
from cvserve.models.serving import serve_locally
from cvserve.models.zoo import class_names
from cvserve.pipelines.app.demo_kafka import run_kafka_demo
from cvserve.pipelines.catalog import classify, pipeline_specs
from cvserve.pipelines.spec import Device, PipelineSpec
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.preprocess.tensors import LABELS, SCORES
from cvserve.profiling import tritonstats

DEMO_IMAGES: tuple[tuple[int, int, str], ...] = (
    (640, 480, "jpeg"),
    (1280, 720, "jpeg"),
    (1920, 1080, "jpeg"),
    (800, 600, "png"),
    (3840, 2160, "jpeg"),
)


def split_table(
    client: PipelineClient, spec: PipelineSpec, before: dict[str, tritonstats.ModelStats]
) -> Table:
    """Mean ms per request of each model of ``spec`` since the ``before`` counters."""
    split = Table(title="Where the time went, per request (Triton statistics API, ms)")
    for column in ("model", "requests", *tritonstats.PHASES):
        split.add_column(column, justify="right")
    for model in spec.model_names:
        delta = tritonstats.fetch(client.triton, model) - before[model]
        split.add_row(
            model, str(delta.requests), *(f"{delta.mean_ms(p):.2f}" for p in tritonstats.PHASES)
        )
    return split


def run_demo(
    arch: str = "resnet50", repeats: int = 3, workdir: Path | None = None, device: Device = "cpu"
) -> int:
    console = Console(width=max(Console().width, 110))
    spec = classify(arch, device=device)
    # Random weights score every box low: keep the top 3 of each image to show the fan-out.
    fan_out = {"score_threshold": 0.0, "max_detections": 3, "device": device}
    stages = [spec, *pipeline_specs("detect_identify", **fan_out)]
    names = class_names(arch)
    console.print(f"[bold]cvserve demo[/bold]: {spec.description} (random weights, seed 0)")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvserve-demo-")))
        t0 = time.perf_counter()
        kafka = stack.enter_context(KafkaBroker(workdir / "kafka"))
        console.print(f"Kafka ready at {kafka.bootstrap} in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        server = stack.enter_context(serve_locally(stages, workdir))
        console.print(
            f"Triton 2.51 ready at {server.grpc_url} in {time.perf_counter() - t0:.1f} s "
            f"(log {server.log_path})"
        )
        with PipelineClient(server.grpc_url, spec) as client:
            client.infer([synthetic_image(64, 64)])  # warm-up, not measured
            before = {m: tritonstats.fetch(client.triton, m) for m in spec.model_names}
            answers = Table(title="Answers (top-3)")
            for column in ("image", "bytes", "top-3 (class: score)", "p50 ms"):
                answers.add_column(column)
            for seed, (width, height, fmt) in enumerate(DEMO_IMAGES):
                image = synthetic_image(width, height, seed, fmt)
                latencies = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    out = client.infer([image], outputs=[LABELS, SCORES])
                    latencies.append(time.perf_counter() - start)
                top = ", ".join(
                    f"{names[label]}: {score:.4f}"
                    for label, score in zip(out[LABELS][0][:3], out[SCORES][0][:3], strict=True)
                )
                answers.add_row(
                    f"{width}x{height} {fmt}",
                    f"{len(image):,}",
                    top,
                    f"{np.median(latencies) * 1e3:.1f}",
                )
            console.print(answers)
            console.print(split_table(client, spec, before))
        crops_from = [
            (f"{w}x{h}", synthetic_image(w, h, seed))
            for seed, (w, h) in enumerate([(640, 480), (1280, 720), (800, 800)])
        ]
        run_kafka_demo(console, kafka.bootstrap, server.grpc_url, crops_from, workdir)
    console.print("Stopped the workers, Triton and Kafka.")
    return 0
