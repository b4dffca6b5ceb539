"""Kubernetes objects of a pipeline's stage workers: a Deployment and a KEDA ScaledObject per
broker stage, the ConfigMaps they read (the pipeline file, the Kafka client settings), the KEDA
TriggerAuthentication, and the NetworkPolicy letting only workers reach Triton's gRPC port.

Secrets are Strimzi's: the workers' password from the `KafkaUser`'s Secret, the cluster CA from
``<cluster>-cluster-ca-cert``; the same two feed KEDA, which reads the consumer groups' lag as
the workers' user. `k8s_documents` returns everything, Strimzi's resources included, in the order
``kubectl apply`` needs them (file names sort that way: `write_documents`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cvserve.broker.topics import NAMESPACE_ENV
from cvserve.deploy.kafka_client_config import env_name
from cvserve.deploy.kafka_security import SCRAM_MECHANISM, SECURE_LISTENER
from cvserve.pipelines.app.manifests import strimzi
from cvserve.pipelines.app.manifests.kube import (
    WORKER_NAME,
    Document,
    any_worker_selector,
    labels,
    metadata,
    triton_ref,
    worker_selector,
)
from cvserve.pipelines.app.manifests.plan import (
    PIPELINES_DIR,
    DeployPlan,
    ManifestError,
    StagePlan,
    k8s_name,
)
from cvserve.pipelines.app.manifests.worker import (
    LIVE_PATH,
    METRICS_PORT,
    METRICS_PORT_NAME,
    READY_PATH,
    STOP_GRACE_S,
    prometheus_annotations,
    worker_command,
)

DEFAULT_IMAGE = "cvserve:latest"
KEDA_API_VERSION = "keda.sh/v1alpha1"
KAFKA_CA_DIR = "/etc/cvserve/kafka-ca"
# KEDA's Kafka scaler names SASL mechanisms its own way.
KEDA_SASL = {SCRAM_MECHANISM: "scram_sha512"}
# Prometheus pods that may scrape Triton's metrics port (the kube-prometheus / Helm chart label).
DEFAULT_PROMETHEUS_LABELS = {"app.kubernetes.io/name": "prometheus"}


@dataclass(frozen=True)
class K8sOptions:
    """Where the workers run and what they reach; None: the in-cluster default (the Strimzi
    cluster's bootstrap Service, the Triton Service of ``deploy/k8s/``)."""

    image: str = DEFAULT_IMAGE
    cluster: str = strimzi.DEFAULT_CLUSTER
    bootstrap: str | None = None
    triton_url: str | None = None
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "1Gi"})
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "2", "memory": "2Gi"})
    prometheus_labels: dict[str, str] = field(
        default_factory=lambda: dict(DEFAULT_PROMETHEUS_LABELS)
    )
    storage: str = strimzi.DEFAULT_STORAGE

    @property
    def bootstrap_address(self) -> str:
        return self.bootstrap or strimzi.bootstrap_address(self.cluster)

    @property
    def triton_address(self) -> str:
        return self.triton_url or triton_ref().grpc_url


def pipeline_config_map(plan: DeployPlan) -> Document:
    """The pipeline file (and a composite's sibling parts), mounted at `PIPELINES_DIR`."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            k8s_name(plan.instance, "pipeline"), labels(plan, WORKER_NAME, "config")
        ),
        "data": dict(plan.files),
    }


def client_settings(plan: DeployPlan) -> dict[str, str]:
    """The workers' librdkafka security settings (all but the password), by their own names."""
    return {
        "security.protocol": SECURE_LISTENER,
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": strimzi.user_name(plan),
        "ssl.ca.location": f"{KAFKA_CA_DIR}/{strimzi.CA_CERT_KEY}",
    }


def client_config_map(plan: DeployPlan) -> Document:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            k8s_name(plan.instance, "kafka-client"), labels(plan, WORKER_NAME, "config")
        ),
        "data": client_settings(plan),
    }


def _worker_env(plan: DeployPlan) -> list[Document]:
    """`deploy.kafka_client_config`'s variables: settings from the ConfigMap, the password from
    the KafkaUser's Secret; the topic namespace."""
    config_map = client_config_map(plan)["metadata"]["name"]
    env: list[Document] = [{"name": NAMESPACE_ENV, "value": plan.topics.namespace}]
    env += [
        {
            "name": env_name(setting),
            "valueFrom": {"configMapKeyRef": {"name": config_map, "key": setting}},
        }
        for setting in client_settings(plan)
    ]
    env.append(
        {
            "name": env_name("sasl.password"),
            "valueFrom": {
                "secretKeyRef": {
                    "name": strimzi.user_name(plan),
                    "key": strimzi.USER_PASSWORD_KEY,
                }
            },
        }
    )
    return env


def _probe(path: str, period_s: int, failures: int) -> Document:
    return {
        "httpGet": {"path": path, "port": METRICS_PORT_NAME},
        "periodSeconds": period_s,
        "failureThreshold": failures,
    }


def worker_name(plan: DeployPlan, stage: str) -> str:
    return k8s_name(plan.instance, stage)


def worker_deployment(plan: DeployPlan, stage: StagePlan, options: K8sOptions) -> Document:
    """One stage's workers. No ``replicas``: its ScaledObject owns the count (an applied
    ``replicas`` would fight the autoscaler on every apply)."""
    object_labels = labels(plan, WORKER_NAME, "worker", stage.name)
    container = {
        "name": "worker",
        "image": options.image,
        "command": worker_command(
            plan, stage.name, options.bootstrap_address, options.triton_address
        ),
        "env": _worker_env(plan),
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}],
        # Ready: assigned partitions and a Triton that answers; alive: the poll loop turns.
        "readinessProbe": _probe(READY_PATH, 5, 3),
        "livenessProbe": _probe(LIVE_PATH, 10, 3),
        "startupProbe": _probe(LIVE_PATH, 5, 24),
        "resources": {"requests": dict(options.requests), "limits": dict(options.limits)},
        "securityContext": {"allowPrivilegeEscalation": False},
        "volumeMounts": [
            {"name": "pipeline", "mountPath": PIPELINES_DIR, "readOnly": True},
            {"name": "kafka-ca", "mountPath": KAFKA_CA_DIR, "readOnly": True},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(worker_name(plan, stage.name), object_labels),
        "spec": {
            "selector": {"matchLabels": worker_selector(plan, stage.name)},
            "template": {
                "metadata": {"labels": object_labels, "annotations": prometheus_annotations()},
                "spec": {
                    "terminationGracePeriodSeconds": STOP_GRACE_S,
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "pipeline",
                            "configMap": {"name": pipeline_config_map(plan)["metadata"]["name"]},
                        },
                        {
                            "name": "kafka-ca",
                            "secret": {
                                "secretName": strimzi.ca_secret(options.cluster),
                                "items": [
                                    {"key": strimzi.CA_CERT_KEY, "path": strimzi.CA_CERT_KEY}
                                ],
                            },
                        },
                    ],
                },
            },
        },
    }


def trigger_authentication(plan: DeployPlan, options: K8sOptions) -> Document:
    """KEDA's credentials for the lag: the workers' user (name from the client ConfigMap,
    password from its Secret) and the cluster CA."""
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "TriggerAuthentication",
        "metadata": metadata(
            k8s_name(plan.instance, "kafka"), labels(plan, WORKER_NAME, "autoscaling")
        ),
        "spec": {
            "secretTargetRef": [
                {
                    "parameter": "password",
                    "name": strimzi.user_name(plan),
                    "key": strimzi.USER_PASSWORD_KEY,
                },
                {
                    "parameter": "ca",
                    "name": strimzi.ca_secret(options.cluster),
                    "key": strimzi.CA_CERT_KEY,
                },
            ],
            "configMapTargetRef": [
                {
                    "parameter": "username",
                    "name": client_config_map(plan)["metadata"]["name"],
                    "key": "sasl.username",
                }
            ],
        },
    }


def scaled_object(plan: DeployPlan, stage: StagePlan, options: K8sOptions) -> Document:
    """KEDA scales ``stage``'s Deployment on its consumer group's lag on its input topic:
    ``lagThreshold`` records per replica (`plan.StagePlan.lag_threshold`)."""
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": metadata(
            worker_name(plan, stage.name),
            labels(plan, WORKER_NAME, "autoscaling", stage.name),
        ),
        "spec": {
            "scaleTargetRef": {"name": worker_name(plan, stage.name)},
            "minReplicaCount": stage.min_replicas,
            "maxReplicaCount": stage.max_replicas,
            "triggers": [
                {
                    "type": "kafka",
                    "metadata": {
                        "bootstrapServers": options.bootstrap_address,
                        "consumerGroup": stage.group,
                        "topic": stage.topic,
                        "lagThreshold": str(stage.lag_threshold),
                        # Where a worker's consumer starts without a committed offset.
                        "offsetResetPolicy": "earliest",
                        "sasl": KEDA_SASL[SCRAM_MECHANISM],
                        "tls": "enable",
                    },
                    "authenticationRef": {
                        "name": trigger_authentication(plan, options)["metadata"]["name"]
                    },
                }
            ],
        },
    }


def triton_network_policy(plan: DeployPlan, options: K8sOptions) -> Document:
    """Triton's pods take gRPC only from cvserve workers (any pipeline's: one Triton serves
    them all) and metrics only from Prometheus; its HTTP port, which also serves inference, from
    no pod (the kubelet's probes come from the node, which a NetworkPolicy always admits)."""
    triton = triton_ref()
    missing = {"grpc", "metrics"} - set(triton.container_ports)
    if missing:
        raise ManifestError(f"deploy/k8s/triton-deployment.yaml names no port {sorted(missing)}")
    name = triton.pod_labels["app.kubernetes.io/name"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            k8s_name(name, "ingress"),
            {**labels(plan, name, "network"), "app.kubernetes.io/instance": name},
        ),
        "spec": {
            "podSelector": {"matchLabels": dict(triton.pod_labels)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": any_worker_selector()}}],
                    "ports": [{"protocol": "TCP", "port": "grpc"}],
                },
                {
                    "from": [
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": dict(options.prometheus_labels)},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": "metrics"}],
                },
            ],
        },
    }


def k8s_documents(plan: DeployPlan, options: K8sOptions | None = None) -> list[Document]:
    """Every object of the deployment, in apply order: Kafka cluster, topics, user, worker
    config, NetworkPolicy, KEDA authentication, then per stage its Deployment and ScaledObject."""
    options = options or K8sOptions()
    documents = [
        *strimzi.kafka_cluster(plan, options.cluster, options.storage),
        *strimzi.kafka_topics(plan, options.cluster),
        strimzi.kafka_user(plan, options.cluster),
        pipeline_config_map(plan),
        client_config_map(plan),
        triton_network_policy(plan, options),
        trigger_authentication(plan, options),
    ]
    for stage in plan.stages:
        documents += [worker_deployment(plan, stage, options), scaled_object(plan, stage, options)]
    return documents
