"""Everything the operator creates and the chart installs is valid for Kubernetes' own schemas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmservice.operator.builders import build_all
from llmservice.operator.crd import build_crd
from llmservice.operator.resource import parse_llmservice
from llmservice.operator.settings import Settings

Validate = Callable[[dict[str, Any]], list[str]]
CHART_VALUES = [
    [],
    ["--set", "replicaCount=2", "--set", "serviceMonitor.enabled=true"],
    ["--set", "watchNamespaces={team-a,team-b}", "--set", "replicaCount=3"],
]


def test_the_owned_objects_of_every_example_are_valid(
    k8s_validate: Validate, example_path: Path, load_example: Callable[..., dict[str, Any]]
) -> None:
    body = load_example(example_path)
    body["metadata"]["uid"] = "0d3c6a52-5a0e-4c1a-9b0e-1f2a3b4c5d6e"
    for manifest in build_all(parse_llmservice(body), Settings()):
        assert k8s_validate(manifest) == [], manifest["kind"]


def test_a_fully_featured_llmservice_renders_valid_objects(
    k8s_validate: Validate, body: dict[str, Any]
) -> None:
    body["spec"].update(
        model={
            "name": "m",
            "source": "hf://org/repo",
            "credentialsSecretRef": {"name": "hf", "key": "t"},
        },
        auth={"apiKeySecretRef": {"name": "key", "key": "k"}},
        autoscaling={"enabled": True},
        cache={"pvc": {"size": "100Gi", "storageClassName": "ssd"}},
        scheduling={
            "nodeSelector": {"a": "b"},
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 1,
                            "preference": {
                                "matchExpressions": [
                                    {"key": "gpu", "operator": "In", "values": ["h100"]}
                                ]
                            },
                        }
                    ]
                }
            },
            "priorityClassName": "high",
        },
        networkPolicy={
            "allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]
        },
        rollout={"maxSurge": "25%", "maxUnavailable": 0},
    )
    for manifest in build_all(parse_llmservice(body), Settings()):
        assert k8s_validate(manifest) == [], manifest["kind"]


def test_the_crd_is_a_valid_crd(k8s_validate: Validate) -> None:
    assert k8s_validate(build_crd()) == []


@pytest.mark.parametrize("values", CHART_VALUES, ids=["default", "peering", "namespaced"])
def test_the_rendered_chart_is_valid(
    k8s_validate: Validate, helm_template: Callable[..., list[dict[str, Any]]], values: list[str]
) -> None:
    for manifest in helm_template("--include-crds", *values):
        if manifest["apiVersion"] in ("kopf.dev/v1", "monitoring.coreos.com/v1"):
            continue  # custom resources: their CRDs are checked as CRDs
        assert k8s_validate(manifest) == [], f"{manifest['kind']} {manifest['metadata']['name']}"
