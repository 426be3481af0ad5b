"""The Helm chart: lint-clean, renders what the operator needs and no more."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

HelmTemplate = Callable[..., list[dict[str, Any]]]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def test_helm_lint_is_clean(helm: str, repo: Path) -> None:
    result = subprocess.run(
        [helm, "lint", "--strict", str(repo / "charts" / "llmservice")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_install(helm_template: HelmTemplate) -> None:
    docs = helm_template()
    assert sorted(d["kind"] for d in docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
    ]
    deployment = _one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {
        "type": "Recreate"
    }
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["llmservice", "operator"]
    assert container["args"] == ["--liveness=http://0.0.0.0:8080/healthz"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e for e in container["env"]}
    assert env["LLMSERVICE_DEFAULT_IMAGE"]["value"] == "llmservice-runtime:0.1.0"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == _one(docs, "ServiceAccount")["metadata"]["name"]


def test_rbac_grants_only_what_the_operator_uses(helm_template: HelmTemplate) -> None:
    rules = _one(helm_template(), "ClusterRole")["rules"]
    granted = {
        (r["apiGroups"][0], resource): sorted(r["verbs"])
        for r in rules
        for resource in r["resources"]
    }
    assert granted == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"],
        ("llmservice.io", "llmservices"): ["get", "list", "patch", "watch"],
        ("llmservice.io", "llmservices/status"): ["patch"],
        ("llmservice.io", "llmservices/finalizers"): ["update"],
        ("apps", "deployments"): ["create", "get", "list", "patch", "watch"],
        ("", "services"): ["create", "get", "list", "patch", "watch"],
        ("policy", "poddisruptionbudgets"): ["create", "get", "list", "patch", "watch"],
        ("networking.k8s.io", "networkpolicies"): [
            "create",
            "delete",
            "get",
            "list",
            "patch",
            "watch",
        ],
        ("autoscaling", "horizontalpodautoscalers"): [
            "create",
            "delete",
            "get",
            "list",
            "patch",
            "watch",
        ],
        ("", "pods"): ["list", "watch"],
        ("", "events"): ["create", "list"],
    }
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in rules)


def test_several_replicas_elect_one_through_kopf_peering(helm_template: HelmTemplate) -> None:
    docs = helm_template("--set", "replicaCount=2")
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--peering=llmservice" in container["args"]
    assert _one(docs, "ClusterKopfPeering")["metadata"]["name"] == "llmservice"
    assert "strategy" not in _one(docs, "Deployment")["spec"]
    rules = _one(docs, "ClusterRole")["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    } in rules


def test_watching_namespaces_uses_roles_there(helm_template: HelmTemplate) -> None:
    docs = helm_template("--set", "watchNamespaces={team-a,team-b}")
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    cluster_resources = {res for r in _one(docs, "ClusterRole")["rules"] for res in r["resources"]}
    assert cluster_resources == {"customresourcedefinitions"}
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--namespace=team-a" in container["args"] and "--namespace=team-b" in container["args"]


def test_the_crd_can_be_left_out_and_a_service_monitor_added(helm_template: HelmTemplate) -> None:
    docs = helm_template("--set", "crds.install=false", "--set", "serviceMonitor.enabled=true")
    assert "CustomResourceDefinition" not in {d["kind"] for d in docs}
    monitor = _one(docs, "ServiceMonitor")["spec"]
    assert monitor["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert (
        monitor["selector"]["matchLabels"]["app.kubernetes.io/managed-by"] == "llmservice-operator"
    )


def test_values_are_checked_against_the_values_schema(helm: str, repo: Path) -> None:
    for bad in (
        "replicaCount=-1",
        "watchNamespaces={Bad_NS}",
        "image.pullPolicy=Sometimes",
        "typo=1",
    ):
        result = subprocess.run(
            [helm, "template", "llms", str(repo / "charts" / "llmservice"), "--set", bad],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0 and "values don't meet the specifications" in result.stderr, (
            bad
        )
