"""`cvserve deploy k8s`: manifests generated from a pipeline file validate offline (Kubernetes
1.37 schemas; KEDA and Strimzi CRD schemas bundled in deploy/k8s/schemas/), and every stage name,
topic, group and partition count in them comes from the pipeline file and broker.topics."""

from __future__ import annotations

import argparse
import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifest_validation import ManifestInvalid, crd_schemas, validate_document

from cvserve.broker.topics import Topics
from cvserve.deploy.kafka import DEFAULT_PARTITIONS, replication_for
from cvserve.deploy.kafka_client_config import SECURITY_SETTINGS, env_name
from cvserve.pipelines.app import deploy_commands
from cvserve.pipelines.app.manifests.k8s import K8sOptions, k8s_documents
from cvserve.pipelines.app.manifests.plan import (
    DEFAULT_RATE_PER_WORKER,
    ManifestError,
    ScalingOptions,
    plan_deployment,
)
from cvserve.pipelines.app.pipeline_args import catalog_route, file_route
from cvserve.pipelines.pipeline_file import SHIPPED

Document = dict[str, Any]
SHIPPED_FILES = ("detect_identify.yaml", "classify.yaml")
TRITON_DEPLOYMENT = (
    Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "triton-deployment.yaml"
)


def documents(file: Path | str, **plan_options: Any) -> list[Document]:
    return k8s_documents(plan_deployment(file, **plan_options))


def of_kind(docs: list[Document], kind: str) -> list[Document]:
    return [d for d in docs if d["kind"] == kind]


def container(deployment: Document) -> Document:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def stage_of(deployment: Document) -> str:
    command = container(deployment)["command"]
    return command[command.index("--stage") + 1]


@pytest.mark.parametrize("name", SHIPPED_FILES)
def test_every_generated_object_validates_against_its_schema(name: str) -> None:
    docs = documents(SHIPPED / name)
    for document in docs:
        validate_document(document)
    stages = len(catalog_route(Path(name).stem).stage_names)
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == kinds.count("ScaledObject") == stages
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "NetworkPolicy"} <= set(kinds)
    assert len({(d["kind"], d["metadata"]["name"]) for d in docs}) == len(docs)


def test_every_custom_kind_written_has_a_bundled_schema_naming_its_source() -> None:
    written = {(d["apiVersion"], d["kind"]) for d in documents(SHIPPED / "detect_identify.yaml")}
    custom = {k for k in written if not k[0].startswith(("v1", "apps/", "networking.k8s.io/"))}
    assert custom == set(crd_schemas())
    for bundled in crd_schemas().values():
        source = bundled["source"]
        assert source["repository"].startswith("https://github.com/")
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
        assert source["path"].endswith(".yaml") and source["release"]


def _one(kind: str) -> Document:
    return copy.deepcopy(of_kind(documents(SHIPPED / "detect_identify.yaml"), kind)[0])


def test_a_scaled_object_with_a_string_replica_count_fails() -> None:
    broken = _one("ScaledObject")
    broken["spec"]["minReplicaCount"] = "1"
    with pytest.raises(ManifestInvalid, match="minReplicaCount"):
        validate_document(broken)


def test_a_scaled_object_with_an_unknown_trigger_field_fails() -> None:
    broken = _one("ScaledObject")
    broken["spec"]["triggers"][0]["lagThreshold"] = "10"  # belongs in the trigger's metadata
    with pytest.raises(ManifestInvalid, match="lagThreshold"):
        validate_document(broken)


def test_a_scaled_object_with_a_number_in_trigger_metadata_fails() -> None:
    broken = _one("ScaledObject")
    broken["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10  # KEDA takes strings only
    with pytest.raises(ManifestInvalid):
        validate_document(broken)


@pytest.mark.parametrize(
    ("field", "value"), [("partitions", 0), ("partitions", "six"), ("replicaz", 3)]
)
def test_a_broken_kafka_topic_fails(field: str, value: Any) -> None:
    broken = _one("KafkaTopic")
    broken["spec"][field] = value
    with pytest.raises(ManifestInvalid):
        validate_document(broken)


def test_a_kafka_user_with_an_unknown_acl_operation_fails() -> None:
    broken = _one("KafkaUser")
    broken["spec"]["authorization"]["acls"][0]["operations"] = ["Reed"]
    with pytest.raises(ManifestInvalid):
        validate_document(broken)


def test_a_broken_deployment_fails() -> None:
    broken = _one("Deployment")
    container(broken)["ports"][0]["containerPort"] = "metrics"
    with pytest.raises(ManifestInvalid):
        validate_document(broken)
    unknown = _one("Deployment")
    container(unknown)["readinessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(ManifestInvalid):
        validate_document(unknown)


def _renamed(tmp_path: Path, shipped: str, name: str) -> Path:
    data = yaml.safe_load((SHIPPED / shipped).read_text())
    data["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("shipped", "renamed"), [("classify.yaml", "sorter"), ("detect_identify.yaml", "people")]
)
def test_a_renamed_pipeline_renames_topics_and_groups_in_every_object(
    tmp_path: Path, shipped: str, renamed: str
) -> None:
    path = _renamed(tmp_path, shipped, renamed)
    docs = documents(path)
    text = yaml.safe_dump_all(docs)
    old = Path(shipped).stem
    assert f"cvserve.{old}." not in text and f"cvserve-{old.replace('_', '-')}" not in text
    topics = Topics(renamed)
    stages = file_route(path).stage_names
    kafka_topics = {d["spec"]["topicName"] for d in of_kind(docs, "KafkaTopic")}
    assert kafka_topics == set(topics.all(stages))
    assert sorted(stage_of(d) for d in of_kind(docs, "Deployment")) == sorted(stages)
    for deployment in of_kind(docs, "Deployment"):
        assert f"/pipelines/{renamed}.yaml" in container(deployment)["command"]


def test_each_scaled_object_watches_what_its_stage_workers_consume() -> None:
    docs = documents(SHIPPED / "detect_identify.yaml")
    topics = Topics("detect_identify")
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for scaled in of_kind(docs, "ScaledObject"):
        deployment = deployments[scaled["spec"]["scaleTargetRef"]["name"]]
        stage = stage_of(deployment)
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == topics.group(stage)
        assert trigger["metadata"]["topic"] == topics.stage_in(stage)
        command = container(deployment)["command"]
        bootstrap = command[command.index("--bootstrap") + 1]
        assert trigger["metadata"]["bootstrapServers"] == bootstrap
        names = {d["metadata"]["name"] for d in of_kind(docs, "TriggerAuthentication")}
        assert trigger["authenticationRef"]["name"] in names
    assert len(deployments) == len(catalog_route("detect_identify").stage_names)


def test_partitions_and_replication_come_from_the_options_and_deploy_kafka() -> None:
    docs = documents(SHIPPED / "classify.yaml", partitions=12, brokers=1)
    replicas, min_isr = replication_for(1)
    for topic in of_kind(docs, "KafkaTopic"):
        assert topic["spec"]["partitions"] == 12
        assert topic["spec"]["replicas"] == replicas
        assert topic["spec"]["config"]["min.insync.replicas"] == str(min_isr)
    (scaled,) = of_kind(docs, "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 12
    (pool,) = of_kind(docs, "KafkaNodePool")
    assert pool["spec"]["replicas"] == 1
    default = of_kind(documents(SHIPPED / "classify.yaml"), "KafkaTopic")[0]
    assert default["spec"]["partitions"] == DEFAULT_PARTITIONS


def test_lag_threshold_is_the_stage_rate_times_the_backlog_seconds() -> None:
    scaling = ScalingOptions(rates={"detect": 37.5}, backlog_s=8)
    docs = documents(SHIPPED / "detect_identify.yaml", scaling=scaling)
    thresholds = {
        s["spec"]["triggers"][0]["metadata"]["consumerGroup"].rsplit(".", 1)[1]: s["spec"][
            "triggers"
        ][0]["metadata"]["lagThreshold"]
        for s in of_kind(docs, "ScaledObject")
    }
    assert thresholds == {"detect": "300", "identify": str(math.ceil(DEFAULT_RATE_PER_WORKER * 8))}


def test_workers_get_credentials_from_strimzi_secrets_and_settings_by_librdkafka_name() -> None:
    docs = documents(SHIPPED / "detect_identify.yaml")
    (user,) = of_kind(docs, "KafkaUser")
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    client = next(d for d in of_kind(docs, "ConfigMap") if "sasl.username" in d["data"])
    assert client["data"]["sasl.username"] == user["metadata"]["name"]
    assert set(client["data"]) <= set(SECURITY_SETTINGS)
    for deployment in of_kind(docs, "Deployment"):
        env = {e["name"]: e for e in container(deployment)["env"]}
        password = env[env_name("sasl.password")]["valueFrom"]["secretKeyRef"]
        assert password == {"name": user["metadata"]["name"], "key": "password"}
        for setting in client["data"]:
            assert env[env_name(setting)]["valueFrom"]["configMapKeyRef"]["key"] == setting
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "cvserve-cluster-ca-cert"
        ca_path = client["data"]["ssl.ca.location"]
        mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
        assert ca_path == f"{mounts['kafka-ca']}/ca.crt"
    (auth,) = of_kind(docs, "TriggerAuthentication")
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert refs["password"]["name"] == user["metadata"]["name"]
    assert refs["ca"] == {"parameter": "ca", "name": "cvserve-cluster-ca-cert", "key": "ca.crt"}


def test_workers_probe_their_own_endpoints_and_are_scraped() -> None:
    for deployment in of_kind(documents(SHIPPED / "classify.yaml"), "Deployment"):
        pod = deployment["spec"]["template"]
        worker = container(deployment)
        assert worker["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
        assert worker["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
        assert "0.0.0.0:9464" in worker["command"]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9464"
        assert set(worker["resources"]) == {"requests", "limits"}
        assert "replicas" not in deployment["spec"]  # KEDA owns the count


def test_kafka_user_may_read_its_inputs_and_write_what_stages_emit_only() -> None:
    docs = documents(SHIPPED / "detect_identify.yaml")
    (user,) = of_kind(docs, "KafkaUser")
    granted = {
        (a["resource"]["type"], a["resource"]["name"]): set(a["operations"])
        for a in user["spec"]["authorization"]["acls"]
    }
    topics = Topics("detect_identify")
    assert granted == {
        ("topic", topics.stage_in("detect")): {"Read", "Describe"},
        ("topic", topics.stage_in("identify")): {"Read", "Describe", "Write"},
        ("topic", topics.results): {"Write", "Describe"},
        ("topic", topics.dead_letter): {"Write", "Describe"},
        ("group", topics.group("detect")): {"Read"},
        ("group", topics.group("identify")): {"Read"},
    }
    (kafka,) = of_kind(docs, "Kafka")
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple"}


def _matches(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return selector.items() <= pod_labels.items()


def test_only_worker_pods_reach_tritons_grpc_port() -> None:
    docs = documents(SHIPPED / "detect_identify.yaml")
    (policy,) = of_kind(docs, "NetworkPolicy")
    triton = yaml.safe_load(TRITON_DEPLOYMENT.read_text())
    assert _matches(
        policy["spec"]["podSelector"]["matchLabels"],
        triton["spec"]["template"]["metadata"]["labels"],
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {r["ports"][0]["port"]: r["from"] for r in policy["spec"]["ingress"]}
    assert set(rules) == {"grpc", "metrics"}
    (grpc_from,) = rules["grpc"]
    assert set(grpc_from) == {"podSelector"}  # this namespace's pods, no IP blocks
    for deployment in of_kind(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert _matches(grpc_from["podSelector"]["matchLabels"], labels)
    assert not _matches(
        grpc_from["podSelector"]["matchLabels"], triton["spec"]["template"]["metadata"]["labels"]
    )


def test_every_object_carries_the_common_labels() -> None:
    for document in documents(SHIPPED / "detect_identify.yaml"):
        labels = document["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "cvserve"
        assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= set(labels)


@pytest.mark.parametrize(
    "scaling",
    [
        ScalingOptions(max_replicas=DEFAULT_PARTITIONS + 1),
        ScalingOptions(min_replicas=3, max_replicas=2),
        ScalingOptions(rates={"identify": 5.0}),
    ],
)
def test_impossible_scaling_is_refused(scaling: ScalingOptions) -> None:
    with pytest.raises(ManifestError):
        plan_deployment(SHIPPED / "classify.yaml", scaling)


def test_a_pipeline_naming_a_model_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not read")
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nmodel: {onnx: model.onnx}\ninput: {size: [32, 32]}\n"
        "postprocess: {kind: classification, top_k: 1}\n"
    )
    with pytest.raises(ManifestError, match="model.onnx"):
        plan_deployment(path)


def test_the_command_writes_what_the_generator_makes(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    deploy_commands.register(parser.add_subparsers(dest="command", required=True))
    file = SHIPPED / "detect_identify.yaml"
    args = parser.parse_args(
        ["deploy", "k8s", "--file", str(file), "--out", str(tmp_path), "--rate", "detect=40"]
    )
    assert args.func(args) == 0
    written = [yaml.safe_load(p.read_text()) for p in sorted(tmp_path.glob("*.yaml"))]
    expected = k8s_documents(
        plan_deployment(file, ScalingOptions(rates={"detect": 40.0})), K8sOptions()
    )
    assert written == expected
    bad = parser.parse_args(
        ["deploy", "k8s", "--file", str(file), "--out", str(tmp_path), "--rate", "detect"]
    )
    with pytest.raises(SystemExit, match="STAGE=N"):
        bad.func(bad)


@pytest.mark.parametrize("target", ["k8s", "compose"])
def test_a_shipped_pipeline_is_named_as_every_other_command_names_it(
    tmp_path: Path, target: str
) -> None:
    parser = argparse.ArgumentParser()
    deploy_commands.register(parser.add_subparsers(dest="command", required=True))
    for how, value in (("--pipeline", "detect_identify"), ("--file", "detect_identify.yaml")):
        value = str(SHIPPED / value) if how == "--file" else value
        args = parser.parse_args(["deploy", target, how, value, "--out", str(tmp_path / how)])
        assert args.func(args) == 0
    by_name, by_file = (
        {p.relative_to(tmp_path / how): p.read_bytes() for p in (tmp_path / how).rglob("*.yaml")}
        for how in ("--pipeline", "--file")
    )
    assert by_name == by_file and by_name
    with pytest.raises(SystemExit):  # one of the two, not both
        parser.parse_args(["deploy", target, "--pipeline", "classify", "--file", "x.yaml"])
