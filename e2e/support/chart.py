"""Installing the Helm chart under test, with one operator setting that must reach the operator."""

from __future__ import annotations

from typing import Any

from cluster import Kubectl

from support.llmservices import REPO

CHART = REPO / "charts" / "llmservice"
RELEASE = "llmservice"
OPERATOR_NAMESPACE = "llmservice-system"
# The chart's default runtime image, overridden so the tests can see it reach the pods.
RUNTIME_IMAGE = "registry.example.invalid/llmservice-runtime:e2e"


def install_chart(kubectl: Kubectl) -> dict[str, Any]:
    """`helm install --wait` of the chart (CRD, RBAC, operator Deployment); returns that Deployment."""
    kubectl.helm(
        *("install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--create-namespace"),
        *("--set", f"runtimeImage={RUNTIME_IMAGE}", "--wait", "--timeout", "3m"),
    )
    (deployment,) = kubectl.items(
        "deployments", OPERATOR_NAMESPACE, f"app.kubernetes.io/instance={RELEASE}"
    )
    return dict(deployment)
