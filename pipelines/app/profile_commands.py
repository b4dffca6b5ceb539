"""The profiler's subcommands: ``cvserve profile`` (straight to Triton, or ``--kafka`` across the
broker), ``cvserve profile compare``, ``cvserve bench profiling``, ``cvserve bench kafka`` (one
hop) and ``cvserve bench <composite>`` (a multi-DNN pipeline's throughput across Kafka)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cvserve.pipelines.app.hop_bench_args import add_hop_arguments, hop_bench_options
from cvserve.pipelines.app.pipeline_args import add_file_option, chosen
from cvserve.pipelines.app.triton_tls_args import add_triton_tls_options
from cvserve.pipelines.catalog import COMPOSITES, PIPELINES
from cvserve.profiling.sweep import run_sweep
from cvserve.profiling.sweep_plan import (
    DEFAULT_CONCURRENCY,
    DEFAULT_SIZES,
    PLACEMENTS,
    Point,
    SweepConfig,
    parse_size,
)
from cvserve.profiling.sweep_results import PointResult
from cvserve.profiling.transports import TRANSPORTS


def _csv(kind: type) -> object:
    def parse(text: str) -> tuple:
        return tuple(kind(item) for item in text.split(",") if item.strip())

    return parse


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(parse_size(item) for item in text.split(",") if item.strip())


def _console(record: bool = False) -> Console:
    """A console wide enough for the tables when the output is a file or a pipe."""
    return Console(record=record, width=None if sys.stdout.isatty() else 130)


def cmd_profile(args: argparse.Namespace) -> int:
    from cvserve.broker.worker_processes import WorkerStartError
    from cvserve.deploy.kafka import KafkaStartError
    from cvserve.deploy.triton import TritonStartError
    from cvserve.profiling.kafkasweep import (
        FAN_OUT,
        as_profiled,
        run_broker_sweep,
        served_placement,
    )
    from cvserve.profiling.plots import write_plots
    from cvserve.profiling.report import run_folder, summary_table, write_run
    from cvserve.profiling.tritontrace import TraceUnavailable

    console = _console(record=True)
    if args.model is not None:
        return profile_any_model(args, console)
    options = {"arch": args.arch, "max_batch_size": args.max_batch_size}
    options["instances"] = args.instances
    chosen_pipeline = chosen(args, "profile", **options)
    over_kafka = (
        args.kafka is not None or args.broker == "redis" or chosen_pipeline.composite is not None
    )
    if over_kafka and args.preprocess is not None:
        console.print(
            "--preprocess does not apply across Kafka: encoded images travel and the served "
            "ensembles preprocess them"
        )
        return 2
    placements = args.preprocess or PLACEMENTS
    unknown = set(placements) - set(PLACEMENTS)
    if unknown:
        choices = ", ".join(PLACEMENTS)
        console.print(f"unknown --preprocess {sorted(unknown)}; choose from {choices}")
        return 2
    # Served as they run, returning their models' own times (a fused model's parts, or each stage
    # apart; with --split-preprocess DALI's steps too), which the stage workers carry in their
    # results.
    specs = []
    if over_kafka:
        chosen_specs = chosen(args, "profile", **options, **FAN_OUT).specs
        specs = [as_profiled(s, args.split_preprocess) for s in chosen_specs]
    config = SweepConfig(
        placements=(served_placement(specs),) if over_kafka else tuple(placements),
        sizes=args.sizes,
        concurrency=args.concurrency,
        duration_s=args.duration,
        images_per_size=args.images_per_size,
        split_preprocess=args.split_preprocess,
    )
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    broker_name = TRANSPORTS[args.broker].label
    starting = (
        f"starting {broker_name}, Triton and stage workers" if over_kafka else "starting Triton"
    )
    task = progress.add_task(f"generating images, {starting}", total=None)

    def on_plan(points: int, notes: list[str]) -> None:
        progress.update(task, total=points)
        for message in notes:
            progress.console.print(f"[yellow]{message}[/yellow]")

    def on_point(point: Point, result: PointResult | None) -> None:
        if result is None:
            progress.update(task, description=point.label)
            return
        progress.advance(task)
        crops = getattr(result, "load", None)
        progress.console.print(
            f"  {point.label}: {result.images_per_s:.1f} img/s"
            + (f" ({crops.crops_per_s:.1f} crops/s)" if crops else "")
            + f", {len(result.records)} requests, "
            f"{sum(r.triton_traced for r in result.records)} traced, {result.errors} errors"
            + (f", {crops.incomplete} incomplete" if crops else "")
        )

    try:
        with progress, tempfile.TemporaryDirectory(prefix="cvserve-profile-images-") as images:
            if over_kafka:
                run = run_broker_sweep(
                    chosen_pipeline.route,
                    specs,
                    config,
                    Path(images),
                    bootstrap=(args.redis_url if args.broker == "redis" else args.kafka) or None,
                    triton_url=args.triton_url,
                    workers_per_stage=args.workers,
                    worker_args=chosen_pipeline.worker_args,
                    on_point=on_point,
                    on_plan=on_plan,
                    broker=args.broker,
                )
            else:
                base = chosen_pipeline.specs[0]
                run = run_sweep(base, config, Path(images), args.triton_url, on_point, on_plan)
    except (
        TraceUnavailable,
        TritonStartError,
        KafkaStartError,
        WorkerStartError,
        TimeoutError,
    ) as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    folder = run_folder(Path(args.out))
    summary = write_run(folder, run)
    plots = write_plots(summary, folder)
    console.print(summary_table(summary))
    for line in run.skipped:
        console.print(line)
    console.print("[bold]outside the DNN[/bold] (share of end-to-end; what to change first)")
    for line in summary["outside_dnn"]:
        console.print(f"  {line}")
    console.print(f"[bold]{'broker' if over_kafka else 'placement'} advice[/bold]")
    for line in summary["advice"]:
        console.print(f"  {line}")
    clocks = summary["clocks"]
    console.print(
        f"clocks: Triton steady_clock = client CLOCK_MONOTONIC; worst overshoot "
        f"{clocks['max_triton_skew_us']:.1f} µs"
    )
    if "broker_hops" in clocks:
        hops = clocks["broker_hops"]
        console.print(
            f"broker hops: wall clock of each process (time.time_ns) mapped onto the monotonic "
            f"clock; skew bound {hops['skew_bound_ns'] / 1e3:.1f} µs (offset drift "
            f"{hops['offset_drift_ns'] / 1e3:.1f} µs, sampling ±"
            f"{hops['sampling_uncertainty_ns'] / 1e3:.1f} µs; one host, one kernel clock)"
        )
    console.print(f"wrote {folder}: summary.json requests.csv requests.json trace.json")
    console.print("plots: " + " ".join(str(p) for p in plots))
    (folder / "summary.txt").write_text(console.export_text())
    return 0


def profile_any_model(args: argparse.Namespace, console: Console) -> int:
    """``--model NAME``: a model or ensemble of a running Triton, cvserve's or not; the split
    comes from the statistics API (`profiling.model_profile`)."""
    from rich.table import Table

    from cvserve.profiling import tritonstats
    from cvserve.profiling.model_profile import (
        ModelNotServed,
        profile_model,
        split_rows,
        write_model_run,
    )
    from cvserve.profiling.report import run_folder

    if not args.triton_url:
        console.print("--model profiles a model of a running Triton: give --triton-url HOST:PORT")
        return 2
    try:
        summary = profile_model(
            args.triton_url,
            args.model,
            args.sizes,
            args.concurrency,
            args.duration,
            images_per_size=args.images_per_size,
            on_point=console.print,
        )
    except ModelNotServed as exc:
        console.print(str(exc))
        return 2
    except ConnectionError as exc:
        console.print(f"cannot reach Triton at {args.triton_url}: {exc}")
        return 2
    folder = write_model_run(run_folder(Path(args.out)), summary)
    table = Table(title=f"{args.model}: per model, mean ms per request")
    for column in ("point", "model", "requests", *tritonstats.PHASES):
        table.add_column(column, justify="right")
    for row in split_rows(summary):
        table.add_row(*row)
    console.print(table)
    console.print(f"split: {summary['split_source']}")
    console.print(f"wrote {folder}: summary.json split.csv")
    (folder / "summary.txt").write_text(console.export_text())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from cvserve.profiling.compare import (
        RunNotFound,
        compare_points,
        comparison_table,
        load_summary,
    )

    console = _console()
    try:
        a, b = load_summary(Path(args.run_a)), load_summary(Path(args.run_b))
    except RunNotFound as exc:
        console.print(str(exc))
        return 2
    rows = compare_points(a, b)
    if not rows:
        console.print("the two runs share no point (placement, size, concurrency)")
        return 1
    console.print(comparison_table(rows, str(args.run_a), str(args.run_b)))
    return 0


def cmd_bench_profiling(args: argparse.Namespace) -> int:
    from cvserve.profiling.bench.overhead import bench_profiling

    bench_profiling(
        pipeline_name=args.pipeline,
        arch=args.arch,
        size=parse_size(args.size),
        concurrency=args.concurrency,
        duration_s=args.duration,
        pairs=args.pairs,
        out=Path(args.out) if args.out else None,
        triton_url=args.triton_url,
        console=_console(),
        fuse_stages=args.fuse_stages,
    )
    return 0


def cmd_bench_broker(args: argparse.Namespace) -> int:
    from cvserve.profiling.bench.broker import bench_broker_pipeline

    bench_broker_pipeline(
        args.target,
        workers=args.workers,
        size=parse_size(args.size),
        concurrency=args.concurrency,
        duration_s=args.duration,
        arch=args.arch,
        bootstrap=args.kafka,
        triton_url=args.triton_url,
        out=Path(args.out) if args.out else None,
        console=_console(),
    )
    return 0


def cmd_bench_kafka(args: argparse.Namespace) -> int:
    from cvserve.profiling.bench.kafka import SETUPS, bench_kafka

    bench_kafka(
        bootstrap=args.bootstrap,
        with_redis="redis" in args.with_brokers,
        rounds=args.rounds,
        setups=SETUPS if args.bootstrap is None and not args.one_broker else SETUPS[:1],
        **hop_bench_options(args),
    )
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from cvserve.profiling.bench.soak import soak

    report = soak(
        pipeline=args.pipeline,
        minutes=args.minutes,
        rate=args.rate,
        size=parse_size(args.size),
        bootstrap=args.kafka,
        triton_url=args.triton_url,
        out=Path(args.out) if args.out else None,
        console=_console(),
    )
    return 0 if report["lost"] == 0 else 1


def register(commands: argparse._SubParsersAction, benches: argparse._SubParsersAction) -> None:
    """Add ``profile`` (with ``compare``) to ``cvserve`` and ``profiling`` to ``cvserve bench``."""
    profile = commands.add_parser(
        "profile",
        help="where each request's time goes, per preprocessing placement, size, concurrency",
    )
    profile.add_argument(
        "--pipeline",
        default="classify",
        choices=sorted([*PIPELINES, *COMPOSITES]),
        help="a multi-DNN pipeline (" + ", ".join(COMPOSITES) + ") always runs across Kafka",
    )
    add_file_option(profile)
    add_triton_tls_options(profile)
    profile.add_argument(
        "--model",
        default=None,
        help="with --triton-url: profile this model or ensemble of the running server (any, "
        "not only cvserve's): inputs from its metadata, split from the statistics API",
    )
    profile.add_argument("--arch", default=None, help="DNN architecture (default: pipeline's)")
    profile.add_argument("--max-batch-size", type=int, default=None)
    profile.add_argument("--instances", type=int, default=None)
    profile.add_argument(
        "--sizes",
        type=_sizes,
        default=DEFAULT_SIZES,
        help="WxH,... (default 640x480,1920x1080,3840x2160)",
    )
    profile.add_argument(
        "--concurrency", type=_csv(int), default=DEFAULT_CONCURRENCY, help="default 1,4,16"
    )
    profile.add_argument(
        "--preprocess",
        type=_csv(str),
        default=None,
        help="where preprocessing runs: client-cpu,server-cpu,server-gpu (default all; "
        "server-gpu is skipped without a GPU)",
    )
    profile.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    profile.add_argument("--images-per-size", type=int, default=4)
    profile.add_argument(
        "--triton-url",
        default=None,
        help="a running Triton (gRPC host:port) started with --trace-config triton,file=PATH",
    )
    profile.add_argument(
        "--kafka",
        nargs="?",
        const="",
        default=None,
        metavar="BOOTSTRAP",
        help="send every image across Kafka through stage workers (a running broker's "
        "host:port, else a local one is started)",
    )
    profile.add_argument(
        "--broker",
        choices=sorted(TRANSPORTS),
        default="kafka",
        help="the broker between stages: kafka, or redis (Redis Streams, the paper's "
        "comparison: a local redis-server unless --redis-url)",
    )
    profile.add_argument("--redis-url", default=None, help="with --broker redis: a running one")
    profile.add_argument(
        "--workers",
        type=int,
        default=None,
        help="with --kafka: worker processes per stage (default: each stage's, as cvserve tune "
        "chose them; 1)",
    )
    profile.add_argument(
        "--split-preprocess",
        action="store_true",
        help="ask the preprocess model for PREPROCESS_TIMES (decode/resize/normalize split; "
        "across Kafka too, when the profiler serves the pipeline)",
    )
    profile.add_argument("--out", default="runs", help="folder the run folder goes in")
    profile.set_defaults(func=cmd_profile)
    sub = profile.add_subparsers(dest="profile_command")
    compare = sub.add_parser("compare", help="B / A per category and throughput of two runs")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.set_defaults(func=cmd_compare)

    bench = benches.add_parser(
        "kafka",
        help="one broker hop (1 broker, 3 brokers RF 3, 3 brokers + SASL/TLS; Redis Streams "
        "with --with redis): p50/p99 latency and throughput, alternating rounds; then a "
        "multi-DNN pipeline's throughput with 1 vs 2 workers per stage across each broker",
    )
    bench.add_argument(
        "--bootstrap",
        default=None,
        help="a running cluster, measured alone with the configured client settings "
        "(default: start each local setup)",
    )
    bench.add_argument(
        "--with",
        dest="with_brokers",
        action="append",
        default=[],
        choices=["redis"],
        help="measure this broker beside Kafka (a local redis-server is started)",
    )
    bench.add_argument("--rounds", type=int, default=3, help="alternating rounds per setup")
    bench.add_argument(
        "--one-broker", action="store_true", help="only the 1-broker setup (quicker)"
    )
    add_hop_arguments(bench)
    bench.set_defaults(func=cmd_bench_kafka)

    bench = benches.add_parser("profiling", help="throughput with profiling on vs off")
    bench.add_argument("--pipeline", default="classify", choices=sorted(PIPELINES))
    bench.add_argument("--arch", default=None)
    bench.add_argument("--size", default="640x480")
    bench.add_argument("--concurrency", type=int, default=4)
    bench.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    bench.add_argument("--pairs", type=int, default=6, help="back-to-back off/on pairs")
    bench.add_argument(
        "--fuse-stages",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve it fused (default: as tuned); fused, also compare its split with the "
        "stages apart",
    )
    bench.add_argument("--out", default=None, help="JSON path")
    bench.add_argument("--triton-url", default=None)
    add_triton_tls_options(bench)
    bench.set_defaults(func=cmd_bench_profiling)

    soak = benches.add_parser(
        "soak",
        help="a multi-DNN pipeline at a fixed rate through Kafka and Triton for minutes: RSS slope "
        "of every process, lag, nothing lost (exit 1 if anything was)",
    )
    soak.add_argument("--pipeline", default="detect_identify", choices=sorted(COMPOSITES))
    soak.add_argument("--minutes", type=float, default=10.0)
    soak.add_argument("--rate", type=float, default=3.0, help="images/s, open loop")
    soak.add_argument("--size", default="640x480")
    soak.add_argument("--kafka", default=None, help="a running broker (default: start one)")
    soak.add_argument("--triton-url", default=None, help="a running Triton serving the pipeline")
    soak.add_argument("--out", default=None, help="JSON path")
    soak.set_defaults(func=cmd_bench_soak)

    for name in COMPOSITES:
        composite = benches.add_parser(
            name, help=f"{name} across Kafka: images/s and crops/s with 1 vs 2 workers per stage"
        )
        composite.add_argument(
            "--workers", type=_csv(int), default=(1, 2), help="workers per stage to compare"
        )
        composite.add_argument("--size", default="640x480")
        composite.add_argument("--concurrency", type=int, default=8, help="images in flight")
        composite.add_argument("--duration", type=float, default=15.0, help="seconds per count")
        composite.add_argument("--arch", default=None, help="the first stage's DNN")
        composite.add_argument("--kafka", default=None, help="a running broker (host:port)")
        composite.add_argument("--triton-url", default=None, help="a running Triton serving it")
        add_triton_tls_options(composite)
        composite.add_argument("--out", default=None, help="JSON path")
        composite.set_defaults(func=cmd_bench_broker)
