"""Reading LLMServices and their owned objects back from the cluster, and waiting on their status.

Every wait fails with the state that matters for a diagnosis: the LLMService and its children
as `kubectl get -o yaml`, the namespace's events and the operator log's tail.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cluster import Kubectl, wait_for

from support.operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PLURAL = "llmservices.llmservice.io"
OWNED_KINDS = (
    "deployments.apps",
    "services",
    "networkpolicies.networking.k8s.io",
    "poddisruptionbudgets.policy",
    "horizontalpodautoscalers.autoscaling",
    "persistentvolumeclaims",
)
Obj = dict[str, Any]


def load_manifests(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def in_namespace(manifest: Obj, namespace: str) -> Obj:
    moved = copy.deepcopy(manifest)
    moved.setdefault("metadata", {})["namespace"] = namespace
    return moved


def condition(obj: Obj, kind: str) -> Obj | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def holds(obj: Obj, kind: str, reason: str | None = None) -> bool:
    found = condition(obj, kind)
    return bool(
        found and found["status"] == "True" and (reason is None or found.get("reason") == reason)
    )


class LLMServices:
    """Helpers bound to the admin kubectl and the running operator."""

    def __init__(self, kubectl: Kubectl, operator: OperatorProcess) -> None:
        self.kubectl = kubectl
        self.operator = operator

    def apply(self, manifest: Obj) -> Obj:
        self.kubectl.apply(yaml.safe_dump(manifest))
        meta = manifest["metadata"]
        return self.get(meta["namespace"], meta["name"])

    def get(self, namespace: str, name: str) -> Obj:
        return dict(self.kubectl.get(PLURAL, name, namespace))

    def explain(self, namespace: str) -> str:
        kinds = (PLURAL, *OWNED_KINDS, "replicasets.apps", "pods")
        events = self.kubectl.run(
            "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False
        ).stdout
        return "\n".join(
            [
                self.kubectl.dump(*kinds, namespace=namespace),
                "--- events:",
                events,
                self.operator.log_tail(),
            ]
        )

    def wait(
        self,
        namespace: str,
        name: str,
        predicate: Callable[[Obj], bool],
        what: str,
        timeout: float = 120,
    ) -> Obj:
        def probe() -> Obj | None:
            obj = self.get(namespace, name)
            return obj if predicate(obj) else None

        return wait_for(
            probe,
            timeout=timeout,
            what=f"LLMService {namespace}/{name}: {what}",
            interval=0.5,
            explain=lambda: self.explain(namespace),
        )

    def wait_ready(self, namespace: str, name: str, timeout: float = 120) -> Obj:
        """Ready, with the status written for the current generation and every replica ready."""

        def ready(obj: Obj) -> bool:
            status = obj.get("status") or {}
            return (
                holds(obj, "Ready")
                and not holds(obj, "Degraded")
                and status.get("observedGeneration") == obj["metadata"]["generation"]
                and status.get("phase") == "Ready"
                and status.get("readyReplicas", 0) >= 1
                and status.get("readyReplicas") == status.get("replicas")
            )

        return self.wait(namespace, name, ready, "status Ready for its generation", timeout)

    def children(self, llmservice: Obj) -> dict[str, list[Obj]]:
        """Objects whose controller owner reference is this LLMService, by kind."""
        uid = llmservice["metadata"]["uid"]
        namespace = llmservice["metadata"]["namespace"]
        found: dict[str, list[Obj]] = {}
        for kind in OWNED_KINDS:
            for obj in self.kubectl.items(kind, namespace):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r["uid"] == uid and r.get("controller") for r in refs):
                    found.setdefault(obj["kind"], []).append(obj)
        return found

    def pods(self, namespace: str, name: str) -> list[Obj]:
        return self.kubectl.items("pods", namespace, f"app.kubernetes.io/instance={name}")

    def resource_versions(self, llmservice: Obj) -> dict[str, str]:
        """kind/name -> resourceVersion of every child (to prove that nothing was written)."""
        return {
            f"{kind}/{obj['metadata']['name']}": obj["metadata"]["resourceVersion"]
            for kind, objs in self.children(llmservice).items()
            for obj in objs
        }


def small_llmservice(name: str, namespace: str, gpus: int = 1, **spec: Any) -> Obj:
    """A small LLMService (the built-in model) for behaviour tests; `spec` overrides fields."""
    return {
        "apiVersion": "llmservice.io/v1alpha1",
        "kind": "LLMService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "tiny-reasoner", "source": "builtin:tiny-reasoner"},
            "resources": {"gpus": gpus, "cpu": "2", "memory": "8Gi"},
            "shmSize": "1Gi",
            **spec,
        },
    }
