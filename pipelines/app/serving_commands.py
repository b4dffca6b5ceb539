"""The serving commands: ``cvserve repo build``, ``serve``, ``infer`` and ``demo``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from cvserve.pipelines.app.pipeline_args import (
    add_pipeline_options,
    chosen,
    class_names,
    one_spec,
    options_of,
)
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


def register(sub: Any, benches: Any) -> None:
    """Add the serving commands to ``sub`` (``cvserve``'s subparsers)."""
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
