"""``cvserve deploy k8s|compose --pipeline NAME | --file F --out DIR``: deployment files
generated from a pipeline file — a shipped one by name, or yours — (`pipelines.app.manifests`),
so stage names, topics and partitions are never typed twice."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cvserve.broker.topics import default_namespace
from cvserve.deploy.kafka import DEFAULT_PARTITIONS
from cvserve.pipelines.app.manifests import strimzi
from cvserve.pipelines.app.manifests.compose import write_compose
from cvserve.pipelines.app.manifests.k8s import DEFAULT_IMAGE, K8sOptions, k8s_documents
from cvserve.pipelines.app.manifests.output import write_documents
from cvserve.pipelines.app.manifests.plan import (
    DEFAULT_BACKLOG_S,
    DEFAULT_BROKERS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_RATE_PER_WORKER,
    ManifestError,
    ScalingOptions,
    plan_deployment,
)
from cvserve.pipelines.catalog import COMPOSITES, PIPELINES, shipped
from cvserve.pipelines.pipeline_file import PipelineFileError


def stage_values(items: list[str] | None, convert: type, option: str) -> dict[str, Any]:
    """``["detect=40", "identify=300"]`` → ``{"detect": 40.0, ...}``; `ManifestError` naming
    ``option`` for an item that is not STAGE=N."""
    values = {}
    for item in items or []:
        stage, sep, value = item.partition("=")
        try:
            values[stage] = convert(value)
        except ValueError:
            sep = ""
        if not sep or not stage:
            raise ManifestError(f"{option} {item!r}: expected STAGE=N")
    return values


def _plan(args: argparse.Namespace, scaling: ScalingOptions | None = None) -> Any:
    return plan_deployment(
        args.file or shipped(args.pipeline).source,
        scaling,
        namespace=args.namespace or default_namespace(),
        partitions=args.partitions,
        brokers=getattr(args, "brokers", DEFAULT_BROKERS),
    )


def cmd_deploy_k8s(args: argparse.Namespace) -> int:
    try:
        scaling = ScalingOptions(
            rates=stage_values(args.rate, float, "--rate"),
            backlog_s=args.backlog_seconds,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
        )
        plan = _plan(args, scaling)
        options = K8sOptions(
            image=args.image,
            cluster=args.cluster,
            bootstrap=args.bootstrap,
            triton_url=args.triton_url,
            storage=args.storage,
        )
        written = write_documents(k8s_documents(plan, options), Path(args.out))
    except (PipelineFileError, ManifestError) as exc:
        raise SystemExit(f"cvserve deploy k8s: {exc}") from None
    for stage in plan.stages:
        print(
            f"{stage.name}: {stage.topic} in group {stage.group}, {stage.min_replicas}.."
            f"{stage.max_replicas} workers, lagThreshold {stage.lag_threshold} "
            f"({stage.rate:g} records/s x {stage.backlog_s:g} s)"
        )
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_deploy_compose(args: argparse.Namespace) -> int:
    try:
        plan = _plan(args)
        replicas = stage_values(args.replicas, int, "--replicas")
        written = write_compose(plan, Path(args.out), image=args.image, replicas=replicas)
    except (PipelineFileError, ManifestError) as exc:
        raise SystemExit(f"cvserve deploy compose: {exc}") from None
    print(f"wrote {', '.join(map(str, written))}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--pipeline", choices=sorted([*PIPELINES, *COMPOSITES]))
    which.add_argument("--file", metavar="F", help="a pipeline file (YAML); instead of --pipeline")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the files go")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="the cvserve worker image")
    parser.add_argument(
        "--namespace",
        default=None,
        help="topic prefix (default $CVSERVE_KAFKA_NAMESPACE or cvserve)",
    )
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS, help="per topic")


def register(commands: Any, benches: Any = None) -> None:
    """Add ``cvserve deploy`` to ``commands`` (the subparsers of ``cvserve``)."""
    deploy = commands.add_parser("deploy", help="deployment files from a pipeline file")
    targets = deploy.add_subparsers(dest="deploy_target", required=True)

    k8s = targets.add_parser(
        "k8s",
        help="Kubernetes: stage-worker Deployments, KEDA ScaledObjects on lag, Strimzi Kafka, "
        "NetworkPolicy",
    )
    _common(k8s)
    k8s.add_argument("--cluster", default=strimzi.DEFAULT_CLUSTER, help="Strimzi Kafka name")
    k8s.add_argument("--brokers", type=int, default=DEFAULT_BROKERS, help="Kafka nodes")
    k8s.add_argument("--storage", default=strimzi.DEFAULT_STORAGE, help="per Kafka node")
    k8s.add_argument(
        "--bootstrap", default=None, help="Kafka host:port (default: the Strimzi cluster's)"
    )
    k8s.add_argument(
        "--triton-url", default=None, help="Triton gRPC host:port (default: deploy/k8s's Service)"
    )
    k8s.add_argument(
        "--rate",
        action="append",
        metavar="STAGE=N",
        help="measured records/s (images or crops) of one worker of STAGE "
        f"(default: the file's rate from cvserve tune, else {DEFAULT_RATE_PER_WORKER:g})",
    )
    k8s.add_argument(
        "--backlog-seconds",
        type=float,
        default=DEFAULT_BACKLOG_S,
        help="seconds of work a worker may have queued before KEDA adds one "
        "(lagThreshold = rate x this)",
    )
    k8s.add_argument("--min-replicas", type=int, default=DEFAULT_MIN_REPLICAS)
    k8s.add_argument(
        "--max-replicas", type=int, default=None, help="per stage (default: one per partition)"
    )
    k8s.set_defaults(func=cmd_deploy_k8s)

    compose = targets.add_parser("compose", help="compose: Triton, Kafka, workers on one server")
    _common(compose)
    compose.add_argument(
        "--replicas",
        action="append",
        metavar="STAGE=N",
        help="workers of STAGE (default: the file's workers from cvserve tune, else 1)",
    )
    compose.set_defaults(func=cmd_deploy_compose)
