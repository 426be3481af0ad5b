"""The ClusterIP Service in front of the model server pods (port 8000, named http)."""

from __future__ import annotations

from typing import Any

from llmservice.operator.labels import object_meta, selector_labels
from llmservice.operator.resource import SERVER_PORT, LLMService


def build_service(svc: LLMService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(svc),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(svc.name),
            "ports": [
                {
                    "name": "http",
                    "port": SERVER_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
