"""`cvserve bench <task>`: latency and throughput of a served pipeline over gRPC."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from cvserve.models.params import DnnParams
from cvserve.models.serving import serve_locally
from cvserve.pipelines.catalog import pipeline
from cvserve.pipelines.variants import unfused
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling.load import closed_loop, image_senders, warm_up
from cvserve.profiling.machine import machine_info, write_report
from cvserve.profiling.tables import field, results_table

BENCH_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080))
BENCH_CONCURRENCY: tuple[int, ...] = (1, 4, 8)


def _progress(console: Console, row: dict[str, object]) -> None:
    console.print(
        f"  {row['size']} {row['mode']} x{row['concurrency']}: {row['images_per_s']} img/s, "
        f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
    )


def bench_pipeline(
    name: str = "classify",
    arch: str | None = None,
    sizes: Sequence[tuple[int, int]] = BENCH_SIZES,
    concurrency: Sequence[int] = BENCH_CONCURRENCY,
    sequential_requests: int = 30,
    duration_s: float = 10.0,
    out: Path | None = None,
    triton_url: str | None = None,
) -> dict[str, object]:
    """Sequential p50/p99 and closed-loop throughput per size × concurrency; prints a table and
    writes JSON (``out`` or ``runs/bench-<name>-<time>.json``)."""
    console = Console()
    spec = pipeline(name, arch=arch)
    arch = unfused(spec).stage_by_role("inference").params_as(DnnParams).arch
    rows: list[dict[str, object]] = []

    def measure(url: str) -> None:
        for width, height in sizes:
            images = [synthetic_image(width, height, seed) for seed in range(8)]

            make_sender = image_senders(url, spec, images)
            warm_up(make_sender, 3)
            kb = round(sum(map(len, images)) / len(images) / 1024, 1)
            result = closed_loop(make_sender, 1, requests_per_client=sequential_requests)
            rows.append(
                {
                    "size": f"{width}x{height}",
                    "jpeg_kb": kb,
                    "mode": "sequential",
                    **result.summary(),
                }
            )
            _progress(console, rows[-1])
            for c in concurrency:
                result = closed_loop(make_sender, c, duration_s=duration_s)
                rows.append(
                    {
                        "size": f"{width}x{height}",
                        "jpeg_kb": kb,
                        "mode": "closed-loop",
                        **result.summary(),
                    }
                )
                _progress(console, rows[-1])

    if triton_url:
        measure(triton_url)
    else:
        with serve_locally(spec) as server:
            measure(server.grpc_url)
    report = {
        "benchmark": name,
        "pipeline": spec.name,
        "arch": arch,
        "machine": machine_info(),
        "transport": "gRPC",
        "results": rows,
    }
    table = results_table(
        f"cvserve bench {name} ({arch}, {report['machine']['cores']} cores)",
        {
            "size": field("size"),
            "mode": field("mode"),
            "concurrency": field("concurrency"),
            "images/s": field("images_per_s", ".1f"),
            "p50 ms": field("p50_ms", ".1f"),
            "p99 ms": field("p99_ms", ".1f"),
            "errors": field("errors"),
        },
        rows,
    )
    console.print(table)
    write_report(report, f"bench-{name}", out, console=console)
    return report
