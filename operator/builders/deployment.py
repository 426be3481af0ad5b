"""The Deployment running the model server pods."""

from __future__ import annotations

from typing import Any

from llmservice.operator.builders.pod import build_pod_template
from llmservice.operator.labels import object_meta, selector_labels
from llmservice.operator.resource import LLMService
from llmservice.operator.settings import Settings

# Beyond the model's own startup budget: scheduling, image pull and the model download.
PROGRESS_DEADLINE_MARGIN_SECONDS = 600


def build_deployment(svc: LLMService, settings: Settings) -> dict[str, Any]:
    """A Deployment; with autoscaling on, replicas is left out so the HPA alone owns it."""
    spec: dict[str, Any] = {}
    if not svc.autoscaled:
        spec["replicas"] = svc.replicas
    spec |= {
        "selector": {"matchLabels": selector_labels(svc.name)},
        # The default (maxSurge 0, maxUnavailable 1) replaces pods one at a time without needing
        # a spare GPU, so a rollout on a full cluster cannot deadlock on Pending surge pods.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxSurge": svc.spec.rollout.max_surge,
                "maxUnavailable": svc.spec.rollout.max_unavailable,
            },
        },
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": svc.spec.startup_timeout_seconds
        + PROGRESS_DEADLINE_MARGIN_SECONDS,
        "template": build_pod_template(svc, svc.spec.image or settings.default_image),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(svc),
        "spec": spec,
    }
