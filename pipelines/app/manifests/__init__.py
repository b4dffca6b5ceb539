"""Deployment manifests generated from a pipeline file: Kubernetes (stage-worker Deployments,
KEDA autoscaling on consumer-group lag, a Strimzi Kafka cluster with its topics and user,
NetworkPolicies) and compose for one GPU server.

Every stage name, topic, consumer group and partition count comes from the pipeline file through
`plan.DeployPlan` (`broker.routes`, `broker.topics`, `deploy.kafka`): nothing is typed twice.
"""
