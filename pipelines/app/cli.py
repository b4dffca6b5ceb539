"""The ``cvserve`` command: one entry point, subcommands wiring every folder together."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from pathlib import Path

from cvserve.models.params import ENGINES
from cvserve.pipelines.app.pipeline_args import (
    add_file_option,
    add_pipeline_options,
    chosen,
    class_names,
    one_spec,
    options_of,
    setting_overrides,
)
from cvserve.pipelines.app.run_command import run_command
from cvserve.pipelines.app.triton_tls_args import add_triton_tls_options
from cvserve.pipelines.catalog import PIPELINES, pipeline_specs
from cvserve.pipelines.host import target_host, this_machine


def cmd_repo_build(args: argparse.Namespace) -> int:
    from cvserve.models.repository.local import write_repository

    # An NGC repository is served on another machine: nothing of this one goes into it.
    host = target_host(args.target, this_machine())
    if args.pipeline == "all" and not args.file:
        specs = [
            s for name in sorted(PIPELINES) for s in pipeline_specs(name, host, **options_of(args))
        ]
    else:
        specs = chosen(args, "repo build", host).specs
    for spec in specs:
        if args.target == "ngc":
            from cvserve.models.export import ExportError
            from cvserve.models.repository.ngc import write_ngc_repository

            try:
                write_ngc_repository(spec, Path(args.out), args.format, args.tensorrt)
            except ExportError as exc:
                raise SystemExit(f"cvserve repo build: {exc}") from exc
        else:
            write_repository(spec, Path(args.out))
        models = ", ".join(spec.model_names)
        print(f"wrote {spec.name} ({models}) to {args.out} [{args.target}]")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from cvserve.deploy.triton import TritonServer
    from cvserve.profiling.tritontrace import server_args

    server = TritonServer(
        Path(args.repo),
        workdir=Path(args.workdir) if args.workdir else None,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        extra_args=server_args(Path(args.trace_file)) if args.trace_file else (),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with server:
        print(
            f"tritonserver ready: gRPC {server.grpc_url}  HTTP {server.http_url}  "
            f"metrics {server.metrics_url}\nlog {server.log_path}; Ctrl-C stops it",
            flush=True,
        )
        while not stop.wait(1.0):
            if server.process is None or server.process.poll() is not None:
                print("tritonserver exited", file=sys.stderr)
                return 1
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from cvserve.models.client import InferenceError, PipelineClient
    from cvserve.pipelines.app.summary import summarize, write_pngs

    spec = one_spec(args, "infer")
    names = class_names(spec)
    status = 0
    with PipelineClient(args.url, spec) as client:
        for path in map(Path, args.images):
            try:
                image = path.read_bytes()
            except OSError as exc:
                print(f"{path}: ERROR {exc}")
                status = 1
                continue
            try:  # a server that does not answer (TritonUnreachable) ends the command: one line
                out = client.infer([image])
            except InferenceError as exc:
                print(f"{path}: ERROR {exc}")
                status = 1
                continue
            print(f"{path}: {summarize(out, 0, names)}")
            if args.write_png:
                for written in write_pngs(out, 0, path):
                    print(f"  wrote {written}")
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    from cvserve.pipelines.app.demo import run_demo

    workdir = Path(args.workdir) if args.workdir else None
    if args.file:
        from cvserve.pipelines.app.demo_file import run_file_demo

        return run_file_demo(one_spec(args, "demo"), workdir=workdir)
    return run_demo(arch=args.arch or "resnet50", workdir=workdir, device=args.device)


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


# Folders add their own subcommands: each module listed has `register(commands, benches)`, where
# `commands` are the subparsers of `cvserve` and `benches` those of `cvserve bench`.
COMMAND_MODULES: tuple[str, ...] = (
    "cvserve.pipelines.app.kafka_commands",
    "cvserve.pipelines.app.profile_commands",
    "cvserve.pipelines.app.preprocess_commands",
    "cvserve.pipelines.app.tune_commands",
    "cvserve.pipelines.app.redis_commands",
    "cvserve.pipelines.app.deploy_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    repo = sub.add_parser("repo", help="model repositories").add_subparsers(
        dest="repo_command", required=True
    )
    build = repo.add_parser("build", help="write a Triton model repository for a pipeline")
    add_pipeline_options(build, allow_all=True)
    build.add_argument("--out", required=True)
    build.add_argument(
        "--target",
        default="local",
        choices=("local", "ngc"),
        help="local: python backend everywhere (the bundled Triton); ngc: DALI "
        "backend + exported DNNs for the NGC Triton container",
    )
    build.add_argument(
        "--format",
        default="torchscript",
        choices=("torchscript", "onnx"),
        help="ngc: how DNNs are exported (detectors are always TorchScript)",
    )
    build.add_argument(
        "--tensorrt",
        action="store_true",
        help="ngc + onnx: run the ONNX models through TensorRT (FP16)",
    )
    build.set_defaults(func=cmd_repo_build)

    serve = sub.add_parser("serve", help="run the bundled tritonserver on a repository")
    serve.add_argument("--repo", required=True)
    serve.add_argument("--workdir", default=None, help="where the log and backends go")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument(
        "--trace-file",
        default=None,
        help="let `cvserve profile --triton-url` trace requests (file written here)",
    )
    serve.set_defaults(func=cmd_serve)

    infer = sub.add_parser("infer", help="send images to a served pipeline")
    add_pipeline_options(infer)
    infer.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC host:port")
    add_triton_tls_options(infer)
    infer.add_argument(
        "--write-png",
        action="store_true",
        help="write masks / depth maps as PNGs next to each input",
    )
    infer.add_argument("images", nargs="+")
    infer.set_defaults(func=cmd_infer)

    demo = sub.add_parser("demo", help="the main job end to end on a local Triton")
    demo.add_argument("--arch", default=None, help="the classify DNN (default resnet50)")
    demo.add_argument(
        "--file",
        default=None,
        metavar="F",
        help="serve this pipeline file instead and answer generated images of several sizes",
    )
    demo.add_argument("--workdir", default=None)
    demo.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "gpu"),
        help="where preprocessing, the DNNs and postprocessing run (gpu: DALI mixed, torch)",
    )
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks (tables + JSON)")
    benches = bench.add_subparsers(dest="target", required=True)
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

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub, benches)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
