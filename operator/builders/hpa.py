"""The HorizontalPodAutoscaler (autoscaling/v2) on a per-pod runtime metric.

It targets the Deployment, whose replicas the operator then leaves out of its applies, so the
HPA and a GitOps tool applying the LLMService never fight over the count. The metric reaches the
HPA through a custom-metrics adapter (e.g. prometheus-adapter) under its Prometheus name
`llmservice:<metric>`.
"""

from __future__ import annotations

from typing import Any

from llmservice.operator.labels import object_meta
from llmservice.operator.resource import LLMService

METRIC_PREFIX = "llmservice:"
# A new replica takes minutes to load a model: give up capacity slowly.
SCALE_DOWN_WINDOW_SECONDS = 600
SCALE_DOWN_PERIOD_SECONDS = 300


def build_hpa(svc: LLMService) -> dict[str, Any]:
    scaling = svc.spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(svc),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": METRIC_PREFIX + scaling.metric},
                        "target": {"type": "AverageValue", "averageValue": scaling.target},
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": SCALE_DOWN_WINDOW_SECONDS,
                    "policies": [
                        {"type": "Pods", "value": 1, "periodSeconds": SCALE_DOWN_PERIOD_SECONDS}
                    ],
                }
            },
        },
    }
