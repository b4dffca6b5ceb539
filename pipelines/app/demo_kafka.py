"""The Kafka half of `cvserve demo`: ``detect_identify`` across a real broker.

A detect stage worker reads full images, emits one JPEG crop per detection to the identify
stage's topic; an identify worker embeds every crop. Both are separate processes, as in
production; the demo submits images, reads the results back and shows the hops they took.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cvserve.broker.producer import ImageProducer
from cvserve.broker.results import ResultReader, is_complete
from cvserve.broker.schema import Message, decode_outputs
from cvserve.broker.worker_processes import StageWorkerProcesses
from cvserve.deploy.process import poll_until
from cvserve.pipelines.app.pipeline_args import catalog_route

PIPELINE = "detect_identify"


def run_kafka_demo(
    console: Console,
    bootstrap: str,
    triton_url: str,
    images: list[tuple[str, bytes]],
    workdir: Path,
    timeout_s: float = 180.0,
) -> None:
    """Submit ``images`` (name, bytes) to detect_identify and print what came back."""
    namespace = f"demo{int(time.time())}"
    route = catalog_route(PIPELINE)
    workers = StageWorkerProcesses(bootstrap, route, triton_url, namespace, workdir / "workers")
    with workers:
        workers.wait_running()  # joined their consumer groups: the hops below are the pipeline's
        with ImageProducer(bootstrap, route, namespace) as producer:
            ids = producer.submit([data for _, data in images])
        with ResultReader(bootstrap, route, namespace) as reader:

            def complete() -> bool:
                reader.poll()  # blocks briefly: no pause needed between polls
                return all(is_complete(reader.by_request.get(i, [])) for i in ids)

            poll_until(complete, timeout_s, interval_s=0, what="detect_identify results")
            results = {i: reader.by_request[i] for i in ids}
    table = Table(title="detect_identify over Kafka (random weights: the boxes are arbitrary)")
    for column in ("image", "request id", "crops", "embeddings", "end-to-end ms"):
        table.add_column(column, justify="right")
    hop_ms: dict[str, list[float]] = {}
    for (name, _), request_id in zip(images, ids, strict=True):
        messages = results[request_id]
        crops = [m for m in messages if m.crop is not None]
        norms = [float(np.linalg.norm(decode_outputs(m.value)["EMBEDDING"])) for m in crops]
        last = max(m.trace.hops[-1].t_ns for m in messages)
        first = messages[0].trace.hops[0].t_ns
        table.add_row(
            name,
            request_id[:8],
            str(len(crops)),
            f"{len(norms)} x 128-d, |e| = {np.mean(norms):.3f}" if norms else "0",
            f"{(last - first) / 1e6:.0f}",
        )
        for message in crops:
            _collect_hops(message, hop_ms)
    console.print(table)
    hops = Table(title="Hops of a crop (wall clock, ms, mean)")
    hops.add_column("from → to")
    hops.add_column("ms", justify="right")
    for label, values in hop_ms.items():
        hops.add_row(label, f"{np.mean(values):.1f}")
    console.print(hops)


def _collect_hops(message: Message, into: dict[str, list[float]]) -> None:
    hops = message.trace.hops
    for before, after in itertools.pairwise(hops):
        into.setdefault(f"{before.label} → {after.label}", []).append(
            (after.t_ns - before.t_ns) / 1e6
        )
