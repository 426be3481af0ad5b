"""Pure builders: an LLMService (plus the operator's settings) in, Kubernetes manifests out.

No I/O here: `reconcile.py` applies what `build_all` returns, `llmservice render` prints it, and
the unit tests call each `build_*` directly.
"""

from __future__ import annotations

from typing import Any

from llmservice.operator.builders.deployment import build_deployment
from llmservice.operator.builders.hpa import build_hpa
from llmservice.operator.builders.network_policy import build_network_policy
from llmservice.operator.builders.pdb import build_pdb
from llmservice.operator.builders.service import build_service
from llmservice.operator.resource import LLMService
from llmservice.operator.settings import Settings

Manifest = dict[str, Any]

# Every kind the operator may own: (apiVersion, kind, plural). Order = apply order.
OWNED_KINDS: tuple[tuple[str, str, str], ...] = (
    ("v1", "Service", "services"),
    ("apps/v1", "Deployment", "deployments"),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
)


def build_all(svc: LLMService, settings: Settings) -> list[Manifest]:
    """Every object the LLMService should own, in apply order (the Service first)."""
    manifests = [build_service(svc), build_deployment(svc, settings), build_pdb(svc)]
    if svc.spec.network_policy.enabled:
        manifests.append(build_network_policy(svc, settings))
    if svc.autoscaled:
        manifests.append(build_hpa(svc))
    return manifests


def unwanted_kinds(svc: LLMService, settings: Settings) -> list[tuple[str, str, str]]:
    """Owned kinds this LLMService must not have (switched off): the reconciler deletes them."""
    wanted = {manifest["kind"] for manifest in build_all(svc, settings)}
    return [kind for kind in OWNED_KINDS if kind[1] not in wanted]


__all__ = ["OWNED_KINDS", "Manifest", "build_all", "unwanted_kinds"]
