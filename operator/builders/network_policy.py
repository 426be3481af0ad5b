"""The NetworkPolicy: ingress to port 8000 only from spec.networkPolicy.allowFrom and the operator.

Only Ingress is restricted: egress stays open because hf:// sources download at start-up.
Kubelet probes are not subject to NetworkPolicy, so health checks keep working.
"""

from __future__ import annotations

from typing import Any

from llmservice.operator.labels import object_meta, selector_labels
from llmservice.operator.resource import SERVER_PORT, LLMService
from llmservice.operator.settings import Settings

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def build_network_policy(svc: LLMService, settings: Settings) -> dict[str, Any]:
    peers = [
        peer.model_dump(by_alias=True, exclude_none=True)
        for peer in svc.spec.network_policy.allow_from
    ]
    operator = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: settings.operator_namespace}}
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(svc),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(svc.name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [*peers, operator], "ports": [{"protocol": "TCP", "port": SERVER_PORT}]}
            ],
        },
    }
