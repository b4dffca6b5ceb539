"""What a deployment of one pipeline file consists of: its broker stages, their topics and
consumer groups, and how each stage scales — the one source every manifest is written from.

Lag per replica (KEDA's ``lagThreshold``): KEDA's Kafka scaler asks for
``ceil(total lag of the stage's consumer group / lagThreshold)`` replicas (at most one per
partition). With ``lagThreshold = rate × backlog_s`` — ``rate`` the records/s (images, or crops
for a stage after a fan-out: what its topic carries) one worker of the stage sustains, measured
by `cvserve tune` (the composite file's ``rate:`` per stage) or given with ``--rate STAGE=N``;
``backlog_s`` the seconds of work one worker may have queued — N replicas drain the stage's lag
L in ``L / (N × rate) ≤ backlog_s`` seconds. The scaler so keeps every stage's backlog under
``backlog_s`` seconds of work whatever its rate: a slow DNN stage gets more workers than a fast
one behind the same traffic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cvserve.broker.routes import composite_route, single_ensemble
from cvserve.broker.topics import DEFAULT_NAMESPACE, Topics
from cvserve.deploy.kafka import DEFAULT_PARTITIONS, replication_for
from cvserve.pipelines.catalog import composite_of
from cvserve.pipelines.pipeline_file import SHIPPED, CompositeFile, PipelineFile, load_file

# Records/s one stage worker sustains when none was measured for the stage (no ``rate:`` in the
# file, no ``--rate``): an order
# of magnitude for a worker in front of a GPU Triton (cvserve batches ≤ 16 records a call), not
# a measurement — pass each stage's measured rate.
DEFAULT_RATE_PER_WORKER = 100.0
# Seconds of work one worker may have queued before KEDA adds another (``--backlog-seconds``).
DEFAULT_BACKLOG_S = 10.0
DEFAULT_MIN_REPLICAS = 1
# Kafka brokers of the generated cluster (``--brokers``): replication follows
# `deploy.kafka.replication_for`, as for the local cluster.
DEFAULT_BROKERS = 3
# Where the pipeline file is mounted in a worker's pod.
PIPELINES_DIR = "/pipelines"


class ManifestError(ValueError):
    """A deployment cvserve will not write as asked; the message names the option or file."""


def k8s_name(*parts: str) -> str:
    """A DNS-1123 label from ``parts`` (``cvserve``, ``detect_identify`` → ``cvserve-detect-
    identify``): lower case, ``_`` and ``.`` as ``-``; `ManifestError` beyond 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(name) > 63:
        raise ManifestError(f"{name}: longer than the 63 characters of a Kubernetes name")
    return name


@dataclass(frozen=True)
class StagePlan:
    """One broker stage: what its workers consume and in which group, and how it scales."""

    name: str
    topic: str
    group: str
    rate: float
    workers: int  # processes one server runs (the file's, as `cvserve tune` chose them)
    min_replicas: int
    max_replicas: int
    backlog_s: float

    @property
    def lag_threshold(self) -> int:
        """Records of lag per replica: ``ceil(rate × backlog_s)``, at least 1 (module doc)."""
        return max(1, math.ceil(self.rate * self.backlog_s))


@dataclass(frozen=True)
class DeployPlan:
    """A pipeline file's deployment: names from the file, sizes from the options."""

    pipeline: str
    file: Path
    files: Mapping[str, str]  # file name → text: what the workers' pods mount in PIPELINES_DIR
    topics: Topics
    stages: tuple[StagePlan, ...]
    partitions: int
    brokers: int

    @property
    def instance(self) -> str:
        """The Kubernetes name prefix of this deployment (``cvserve-<pipeline>``)."""
        return k8s_name(self.topics.namespace, self.pipeline)

    @property
    def replication(self) -> tuple[int, int]:
        """(replication factor, ``min.insync.replicas``) of the topics."""
        return replication_for(self.brokers)

    @property
    def all_topics(self) -> list[str]:
        return self.topics.all(s.name for s in self.stages)

    @property
    def worker_file(self) -> str:
        """The pipeline file's path inside a worker's pod."""
        return f"{PIPELINES_DIR}/{self.file.name}"


@dataclass(frozen=True)
class ScalingOptions:
    """How stages scale: measured ``rates`` (records/s per worker) by stage name."""

    rates: Mapping[str, float] = field(default_factory=dict)
    backlog_s: float = DEFAULT_BACKLOG_S
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int | None = None  # None: one per partition


def _files_on_disk(f: PipelineFile) -> list[Path]:
    """Files a pipeline file names (model, weights, repository): a pod has none of them."""
    model = f.model
    weights = Path(model.weights) if model.weights and model.weights != "DEFAULT" else None
    return [p for p in (model.path, model.repository, weights) if p is not None]


def _pod_files(path: Path, loaded: PipelineFile | CompositeFile) -> dict[str, str]:
    """The files a worker's pod needs to load ``path`` as the worker does, by name: the file, and
    a composite's parts written as sibling files (shipped parts are in the image)."""
    parts = [p.pipeline for p in loaded.parts] if isinstance(loaded, CompositeFile) else [loaded]
    files = {path.name: path.read_text()}
    for part in parts:
        on_disk = _files_on_disk(part)
        if on_disk:
            raise ManifestError(
                f"{part.source}: names {', '.join(map(str, on_disk))}, which a worker's pod "
                "cannot read (only the pipeline file is mounted): serve a model by arch, or "
                "build an image that holds the file and its model"
            )
        source = part.source
        if source is None or source == path or source.parent == SHIPPED:
            continue
        if source.parent != path.parent:
            raise ManifestError(
                f"{path}: part {source} is not beside the composite; a pod mounts one folder"
            )
        files[source.name] = source.read_text()
    return files


def plan_deployment(
    file: Path | str,
    scaling: ScalingOptions | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    partitions: int = DEFAULT_PARTITIONS,
    brokers: int = DEFAULT_BROKERS,
) -> DeployPlan:
    """The deployment of pipeline file ``file`` (its route read as a worker reads it).
    `PipelineFileError` for a file cvserve cannot read; `ManifestError` for a rate given for no
    stage, a replica range that is empty or larger than the partitions (KEDA's Kafka
    scaler gives no partition to more consumers than partitions), or a file a pod cannot load."""
    scaling = scaling or ScalingOptions()
    path = Path(file).resolve()
    loaded = load_file(path)
    if isinstance(loaded, CompositeFile):
        stage_route = composite_route(composite_of(loaded))
    else:
        stage_route = single_ensemble(loaded.name)
    names = stage_route.stage_names
    unknown = sorted(set(scaling.rates) - set(names))
    if unknown:
        raise ManifestError(f"--rate for {unknown}: {loaded.name} has stages {names}")
    max_replicas = scaling.max_replicas or partitions
    if not 0 <= scaling.min_replicas <= max_replicas <= partitions:
        raise ManifestError(
            f"replicas {scaling.min_replicas}..{max_replicas}: need 0 <= min <= max <= "
            f"partitions ({partitions})"
        )
    if scaling.backlog_s <= 0 or any(r <= 0 for r in scaling.rates.values()):
        raise ManifestError("rates and --backlog-seconds must be positive")
    topics = Topics(loaded.name, namespace)
    stages = tuple(
        StagePlan(
            name=name,
            topic=topics.stage_in(name),
            group=topics.group(name),
            rate=scaling.rates.get(name) or stage.rate or DEFAULT_RATE_PER_WORKER,
            workers=stage.workers,
            min_replicas=scaling.min_replicas,
            max_replicas=max_replicas,
            backlog_s=scaling.backlog_s,
        )
        for name, stage in zip(names, stage_route.stages, strict=True)
    )
    return DeployPlan(
        pipeline=loaded.name,
        file=path,
        files=_pod_files(path, loaded),
        topics=topics,
        stages=stages,
        partitions=partitions,
        brokers=brokers,
    )
