"""The PodDisruptionBudget: node drains take down at most spec.disruptionBudget.maxUnavailable pods.

`unhealthyPodEvictionPolicy: AlwaysAllow` lets a drain evict pods that never became ready
(crash-looping, still loading), so a broken LLMService cannot block node maintenance.
"""

from __future__ import annotations

from typing import Any

from llmservice.operator.labels import object_meta, selector_labels
from llmservice.operator.resource import LLMService


def build_pdb(svc: LLMService) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(svc),
        "spec": {
            "maxUnavailable": svc.spec.disruption_budget.max_unavailable,
            "selector": {"matchLabels": selector_labels(svc.name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
