"""Labels, selectors, names and owner references shared by every object the operator creates."""

from __future__ import annotations

from typing import Any

from llmservice.operator.crd import API_VERSION, KIND
from llmservice.operator.resource import LLMService

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
APP_NAME = "llmservice"
MANAGED_BY = "llmservice-operator"
# The server-side label selector under which the operator watches what it owns.
OWNED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"


def selector_labels(name: str) -> dict[str, str]:
    """The labels that select one LLMService's pods (immutable in a Deployment: keep them few)."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: name}


def selector_string(name: str) -> str:
    """The same selector as a string, for status.selector (the scale subresource reads it)."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(name).items()))


def labels(svc: LLMService) -> dict[str, str]:
    """The labels every owned object carries."""
    return {**selector_labels(svc.name), MANAGED_BY_LABEL: MANAGED_BY}


def owner_references(svc: LLMService) -> list[dict[str, Any]]:
    """Makes the object garbage-collected with its LLMService (none before the CR has a uid)."""
    if svc.uid is None:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": svc.name,
            "uid": svc.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_meta(svc: LLMService) -> dict[str, Any]:
    """metadata of an owned object: same name and namespace as the LLMService."""
    meta: dict[str, Any] = {"name": svc.name, "namespace": svc.namespace, "labels": labels(svc)}
    refs = owner_references(svc)
    if refs:
        meta["ownerReferences"] = refs
    return meta


def owner_name(body: dict[str, Any]) -> str | None:
    """The LLMService that controls an object (from its owner references), if any."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(
            f"{API_VERSION.split('/')[0]}/"
        ):
            return str(ref["name"])
    return None
