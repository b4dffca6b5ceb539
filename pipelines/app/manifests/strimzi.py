"""The Kafka cluster of a deployment as Strimzi resources (``kafka.strimzi.io/v1``, Strimzi 1.x:
KRaft only, nodes from `KafkaNodePool`s): the cluster, its topics, and the workers' SCRAM user.

The cluster has one listener, TLS with SCRAM-SHA-512 (what ``cvserve kafka start --secure``
requires locally), and ACL authorization: the workers' `KafkaUser` may read each stage's input in
its group and write the topics a stage emits to, nothing else — topics are the `KafkaTopic`s'
(the worker's own create-if-missing finds them there). Record sizes are `deploy.kafka_limits`'s.
"""

from __future__ import annotations

from cvserve.deploy.kafka_limits import LIMITS
from cvserve.pipelines.app.manifests.kube import Document, labels, metadata
from cvserve.pipelines.app.manifests.plan import DeployPlan, k8s_name

API_VERSION = "kafka.strimzi.io/v1"
CLUSTER_LABEL = "strimzi.io/cluster"
LISTENER_NAME = "tls"
LISTENER_PORT = 9093
DEFAULT_CLUSTER = "cvserve"
DEFAULT_STORAGE = "100Gi"
# What a Strimzi KafkaUser's Secret holds for SCRAM users, and the cluster CA Secret's file.
USER_PASSWORD_KEY = "password"
CA_CERT_KEY = "ca.crt"
KAFKA = "cvserve-kafka"


def bootstrap_address(cluster: str) -> str:
    """The in-cluster bootstrap Service Strimzi makes for the TLS listener."""
    return f"{cluster}-kafka-bootstrap:{LISTENER_PORT}"


def ca_secret(cluster: str) -> str:
    """The Secret Strimzi keeps the cluster CA certificate in (key `CA_CERT_KEY`)."""
    return f"{cluster}-cluster-ca-cert"


def user_name(plan: DeployPlan) -> str:
    """The workers' SCRAM user, also the name of the Secret holding its password."""
    return k8s_name(plan.instance, "worker")


def _strimzi_labels(plan: DeployPlan, cluster: str, component: str) -> dict[str, str]:
    return {**labels(plan, KAFKA, component), CLUSTER_LABEL: cluster}


def _cluster_labels(plan: DeployPlan, cluster: str) -> dict[str, str]:
    """The cluster's objects belong to the cluster, not to one pipeline: several pipelines'
    manifests write the same `Kafka` and apply over each other unchanged."""
    return {**labels(plan, KAFKA, "kafka"), "app.kubernetes.io/instance": cluster}


def kafka_cluster(plan: DeployPlan, cluster: str, storage: str = DEFAULT_STORAGE) -> list[Document]:
    """A `KafkaNodePool` of ``plan.brokers`` combined broker+controller nodes (as the local
    cluster: `deploy.kafka_cluster`) and the `Kafka` using it."""
    replicas, min_isr = plan.replication
    pool = {
        "apiVersion": API_VERSION,
        "kind": "KafkaNodePool",
        "metadata": metadata(
            "dual-role", {**_cluster_labels(plan, cluster), CLUSTER_LABEL: cluster}
        ),
        "spec": {
            "replicas": plan.brokers,
            "roles": ["controller", "broker"],
            "storage": {
                "type": "jbod",
                "volumes": [
                    {
                        "id": 0,
                        "type": "persistent-claim",
                        "size": storage,
                        "deleteClaim": False,
                        "kraftMetadata": "shared",
                    }
                ],
            },
        },
    }
    config = {
        **LIMITS.broker_properties(),
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "auto.create.topics.enable": False,
    }
    kafka = {
        "apiVersion": API_VERSION,
        "kind": "Kafka",
        "metadata": metadata(cluster, _cluster_labels(plan, cluster)),
        "spec": {
            "kafka": {
                "listeners": [
                    {
                        "name": LISTENER_NAME,
                        "port": LISTENER_PORT,
                        "type": "internal",
                        "tls": True,
                        "authentication": {"type": "scram-sha-512"},
                    }
                ],
                "authorization": {"type": "simple"},
                "config": config,
            },
            "entityOperator": {"topicOperator": {}, "userOperator": {}},
        },
    }
    return [pool, kafka]


def kafka_topics(plan: DeployPlan, cluster: str) -> list[Document]:
    """A `KafkaTopic` per topic of the pipeline (`broker.topics` names; ``topicName`` keeps the
    Kafka name, the object's name is a valid Kubernetes one)."""
    replicas, min_isr = plan.replication
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "KafkaTopic",
            "metadata": metadata(k8s_name(topic), _strimzi_labels(plan, cluster, "topic")),
            "spec": {
                "topicName": topic,
                "partitions": plan.partitions,
                "replicas": replicas,
                "config": {**LIMITS.topic_config(), "min.insync.replicas": str(min_isr)},
            },
        }
        for topic in plan.all_topics
    ]


def _acl(kind: str, name: str, *operations: str) -> Document:
    return {
        "resource": {"type": kind, "name": name, "patternType": "literal"},
        "operations": list(operations),
        "host": "*",
    }


def worker_acls(plan: DeployPlan) -> list[Document]:
    """Stage i reads its input in its group and writes stage i+1's input (or the results) and
    the dead letters; Describe everywhere it reads or writes (metadata, offsets)."""
    stage_inputs = [s.topic for s in plan.stages]
    acls = [
        _acl("topic", topic, "Read", "Describe", *(("Write",) if i else ()))
        for i, topic in enumerate(stage_inputs)
    ]
    acls += [
        _acl("topic", topic, "Write", "Describe")
        for topic in (plan.topics.results, plan.topics.dead_letter)
    ]
    acls += [_acl("group", s.group, "Read") for s in plan.stages]
    return acls


def kafka_user(plan: DeployPlan, cluster: str) -> Document:
    """The workers' SCRAM-SHA-512 user; Strimzi writes its password to a Secret of its name
    (key `USER_PASSWORD_KEY`)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "KafkaUser",
        "metadata": metadata(user_name(plan), _strimzi_labels(plan, cluster, "user")),
        "spec": {
            "authentication": {"type": "scram-sha-512"},
            "authorization": {"type": "simple", "acls": worker_acls(plan)},
        },
    }
