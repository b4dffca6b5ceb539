"""The served-pipeline benchmarks: ``cvserve bench <pipeline>``, ``engines``, ``efficiency`` and
``loadgen`` (each a table + JSON with the machine)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cvserve.models.params import ENGINES
from cvserve.pipelines.app.pipeline_args import (
    add_file_option,
    add_pipeline_options,
    chosen,
    one_spec,
    setting_overrides,
)
from cvserve.pipelines.app.triton_tls_args import add_triton_tls_options
from cvserve.pipelines.catalog import PIPELINES, pipeline_specs


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from cvserve.profiling.bench.pipeline import bench_pipeline

    bench_pipeline(
        args.target,
        arch=args.arch,
        duration_s=args.duration,
        out=Path(args.out) if args.out else None,
        triton_url=args.triton_url,
    )
    return 0


def cmd_bench_engines(args: argparse.Namespace) -> int:
    from cvserve.profiling.bench.engines import bench_engines

    if args.file:
        specs = chosen(args, "bench engines").specs
    else:
        specs = [
            pipeline_specs(name, arch=arch, device=args.device)[0]
            for name, arch in (item.split(":") for item in args.networks.split(","))
        ]
    bench_engines(
        specs,
        engines=tuple(args.engines.split(",")),
        batches=tuple(int(b) for b in args.batches.split(",")),
        duration_s=args.duration,
        out=Path(args.out) if args.out else None,
        store=args.store,
        rounds=args.rounds,
    )
    return 0


def cmd_bench_efficiency(args: argparse.Namespace) -> int:
    from cvserve.models.engine_choice import with_chosen_engine
    from cvserve.profiling.bench.efficiency import bench_efficiency

    spec = with_chosen_engine(one_spec(args, "bench efficiency"))
    baseline = None
    overrides = setting_overrides(args.baseline or [], "bench efficiency --baseline")
    if args.baseline_engine:  # the old default: that engine at full precision
        overrides = {**overrides, "engine": args.baseline_engine, "precision": "fp32"}
    if overrides:
        baseline = with_chosen_engine(
            chosen(args, "bench efficiency", **overrides, name=f"{spec.name}_baseline").specs[0]
        )
    bench_efficiency(
        spec,
        duration_s=args.duration,
        concurrency=args.concurrency,
        out=Path(args.out) if args.out else None,
        baseline=baseline,
        rounds=args.rounds,
        target=args.ratio_target or None,
    )
    return 0


def cmd_bench_loadgen(args: argparse.Namespace) -> int:
    import contextlib

    from cvserve.models.serving import serve_locally
    from cvserve.preprocess.synthetic import synthetic_image
    from cvserve.profiling.bench.loadgen import bench_loadgen
    from cvserve.profiling.model_profile import ModelNotServed

    width, height = (int(v) for v in args.size.lower().split("x"))
    images = [synthetic_image(width, height, seed) for seed in range(args.images)]
    with contextlib.ExitStack() as stack:
        if args.triton_url:
            url, model = args.triton_url, args.model or args.pipeline
        else:
            spec = one_spec(args, "bench loadgen")
            url, model = stack.enter_context(serve_locally(spec)).grpc_url, spec.name
        try:
            bench_loadgen(
                url,
                model,
                images,
                concurrency=tuple(int(c) for c in args.concurrency.split(",")),
                rounds=args.rounds,
                duration_s=args.duration,
                out=Path(args.out) if args.out else None,
            )
        except (ModelNotServed, ValueError, RuntimeError) as exc:  # one line, no traceback
            raise SystemExit(f"cvserve bench loadgen: {exc}") from None
    return 0


def _rounds(text: str) -> int:
    """``--rounds``: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1 round, not {value}")
    return value


def register(sub: Any, benches: Any) -> None:
    """Add the served-pipeline benchmarks to ``benches`` (``cvserve bench``'s subparsers)."""
    for name in PIPELINES:
        task = benches.add_parser(name, help=f"served {name}: latency and throughput")
        task.add_argument("--arch", default=None, help="DNN (default: the pipeline's)")
        task.add_argument("--duration", type=float, default=10.0, help="seconds per load point")
        task.add_argument("--out", default=None, help="JSON path")
        task.add_argument("--triton-url", default=None, help="a running Triton (gRPC host:port)")
        add_triton_tls_options(task)
        task.set_defaults(func=cmd_bench_pipeline)

    engines = benches.add_parser(
        "engines",
        help="every network x engine x precision x batch on this CPU or GPU: images/s and "
        "agreement",
    )
    engines.add_argument(
        "--networks",
        default="classify:resnet50,classify:mobilenet_v3_small,identify:embed_resnet18",
        help="pipeline:arch,... (default: resnet50, mobilenet_v3_small, embed_resnet18)",
    )
    add_file_option(engines)
    engines.add_argument("--engines", default=",".join(ENGINES))
    engines.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "gpu"),
        help="where the networks run (gpu: cuda:0; the engines that run there)",
    )
    engines.add_argument("--batches", default="1,8")
    engines.add_argument(
        "--rounds",
        type=_rounds,
        default=3,
        help="alternating rounds, one pass of every engine each: medians and min-max (default 3)",
    )
    engines.add_argument(
        "--duration", type=float, default=2.0, help="seconds per pass (one per round; default 2)"
    )
    engines.add_argument(
        "--store",
        action="store_true",
        help="replace this machine's stored engine measurements (what served stages choose "
        "from) with this run's",
    )
    engines.add_argument("--out", default=None, help="JSON path")
    engines.set_defaults(func=cmd_bench_engines)

    efficiency = benches.add_parser(
        "efficiency", help="served ensemble vs its stages alone (the served/limit ratio)"
    )
    add_pipeline_options(efficiency)
    efficiency.add_argument(
        "--rounds",
        type=_rounds,
        default=5,
        help="rounds of stages alone + served back to back, the order alternating: served / "
        "limit per round, their median and min-max per size (default 5)",
    )
    efficiency.add_argument(
        "--duration",
        type=float,
        default=3.0,
        help="seconds per measurement, each round (default 3)",
    )
    efficiency.add_argument(
        "--target",
        dest="ratio_target",  # `target` is the bench subcommand's name
        type=float,
        default=0.9,
        help="served / limit to hold each size to (0: none); a size whose rounds spread wider "
        "than its distance to the target is reported as undecided (default 0.9)",
    )
    efficiency.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests in flight (default: max batch size x (DNN instances + 1))",
    )
    efficiency.add_argument(
        "--baseline-engine",
        default=None,
        choices=ENGINES,
        help="also serve the pipeline on this engine in the same run: served_speedup per size",
    )
    efficiency.add_argument(
        "--baseline",
        action="append",
        metavar="SETTING=VALUE",
        help="also serve the pipeline with this serving setting changed (repeat for several; "
        "e.g. fuse_stages=false dali_threads=2): served_speedup per size",
    )
    efficiency.add_argument("--out", default=None, help="JSON path")
    efficiency.set_defaults(func=cmd_bench_efficiency)

    loadgen = benches.add_parser(
        "loadgen", help="cvserve's load generator beside perf_analyzer on one served model"
    )
    add_pipeline_options(loadgen)
    loadgen.add_argument("--triton-url", default=None, help="a running Triton (gRPC host:port)")
    add_triton_tls_options(loadgen)
    loadgen.add_argument("--model", default=None, help="with --triton-url: the model to drive")
    loadgen.add_argument("--concurrency", default="1,4,8")
    loadgen.add_argument(
        "--rounds",
        type=_rounds,
        default=3,
        help="alternating rounds: the ratio per round, its median and min-max (default 3)",
    )
    loadgen.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    loadgen.add_argument("--size", default="640x480", help="WxH of the generated JPEGs")
    loadgen.add_argument("--images", type=int, default=8, help="how many distinct images")
    loadgen.add_argument("--out", default=None, help="JSON path")
    loadgen.set_defaults(func=cmd_bench_loadgen)
