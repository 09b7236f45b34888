"""make k8s-check's validation (smsgw_dev.k8s_check) catches what it is there to catch; the check
itself, with kustomize, runs in CI (.ci/run: make k8s-check)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from smsgw_dev.k8s_check import crd_schemas, problems_of

BASE = Path(__file__).resolve().parents[2] / "k8s" / "base"


def base_object(kind: str, name: str) -> dict:
    for path in sorted(BASE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return doc
    raise LookupError(f"{kind}/{name}")


def test_the_objects_as_written_pass():
    crds = crd_schemas()
    assert problems_of(base_object("Deployment", "intake"), crds) == []
    assert problems_of(base_object("KafkaTopic", "smsgw.message-events.v1"), crds) == []


def test_a_misspelled_or_mistyped_kubernetes_field_is_an_error():
    crds = crd_schemas()
    deployment = copy.deepcopy(base_object("Deployment", "intake"))
    deployment["spec"]["replicaz"] = 2  # strict: an unknown field is refused, not ignored
    assert problems_of(deployment, crds)
    deployment = copy.deepcopy(base_object("Deployment", "intake"))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    assert problems_of(deployment, crds)


def test_strimzi_objects_are_checked_against_their_schemas():
    crds = crd_schemas()
    topic = copy.deepcopy(base_object("KafkaTopic", "smsgw.message-events.v1"))
    topic["spec"]["partitions"] = "twelve"
    assert any("partitions" in p for p in problems_of(topic, crds))
    topic = copy.deepcopy(base_object("KafkaTopic", "smsgw.message-events.v1"))
    topic["spec"]["replica"] = 3  # a misspelling of replicas
    assert problems_of(topic, crds)
    del topic["metadata"]["labels"]["strimzi.io/cluster"]  # no operator would pick it up
    assert any("strimzi.io/cluster" in p for p in problems_of(topic, crds))


def test_a_custom_resource_without_a_schema_is_an_error_not_a_pass():
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"}}
    assert problems_of(monitor, crd_schemas()) == [
        "no schema for monitoring.coreos.com/v1 ServiceMonitor: add one to deploy/k8s-schemas/"
    ]
