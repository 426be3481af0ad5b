"""The pod template of an LLMService: the server container, its probes, volumes and security.

Probes (the runtime's contract, DESIGN.md section 2):
- startupProbe on /health: 200 once the model is loaded; sized by spec.startupTimeoutSeconds so
  a long download + load is not killed by liveness;
- readinessProbe on /ready: turns 503 as soon as the pod drains, so it leaves the Service fast;
- livenessProbe on /health: 503 when the engine died or hangs -> restart.
Shutdown: preStop sleeps while endpoints are updated, then SIGTERM makes the runtime drain for
`--shutdown-timeout`; terminationGracePeriodSeconds covers both plus a margin.
"""

from __future__ import annotations

import math
from typing import Any

from llmservice.operator.builders.runtime_args import (
    API_KEY_ENV,
    CACHE_DIR,
    SOURCE_DIR,
    fetch_command,
    model_location,
    server_args,
)
from llmservice.operator.labels import labels
from llmservice.operator.resource import SERVER_PORT, LLMService

RUN_AS_USER = 1000
PRE_STOP_SLEEP_SECONDS = 5
GRACE_MARGIN_SECONDS = 15
STARTUP_PERIOD_SECONDS = 10
CONTAINER = "server"
FETCH_CONTAINER = "fetch-model"


def _writable_home_env() -> list[dict[str, Any]]:
    # Runtime caches (Triton, torch, Hugging Face) go to /tmp: the root filesystem is read-only.
    return [
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
        {"name": "TRITON_CACHE_DIR", "value": "/tmp/.triton"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security() -> dict[str, Any]:
    # Meets the "restricted" Pod Security Standard; fsGroup makes the cache volume writable.
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _secret_env(name: str, ref: Any) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _resources(svc: LLMService) -> dict[str, Any]:
    res = svc.spec.resources
    requests: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    # No CPU limit: throttling the tokenizer and the scheduler loop costs latency for nothing.
    limits: dict[str, Any] = {"memory": res.memory}
    if res.gpus > 0:
        requests[res.gpu_resource_name] = res.gpus
        limits[res.gpu_resource_name] = res.gpus
    return {"requests": requests, "limits": limits}


def _probes() -> dict[str, Any]:
    def http(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": failures,
        }

    return {
        "readinessProbe": http("/ready", period=5, failures=2),
        "livenessProbe": http("/health", period=10, failures=3),
    }


def _startup_probe(svc: LLMService) -> dict[str, Any]:
    failures = math.ceil(svc.spec.startup_timeout_seconds / STARTUP_PERIOD_SECONDS)
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": STARTUP_PERIOD_SECONDS,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _volumes(svc: LLMService) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, the server container's mounts)."""
    volumes: list[dict[str, Any]] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": svc.spec.shm_size}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "model-cache", **_cache_volume(svc)},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "model-cache", "mountPath": CACHE_DIR},
    ]
    claim = model_location(svc).source_claim
    if claim is not None:
        volumes.append(
            {
                "name": "model-source",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        )
        mounts.append({"name": "model-source", "mountPath": SOURCE_DIR, "readOnly": True})
    return volumes, mounts


def _cache_volume(svc: LLMService) -> dict[str, Any]:
    pvc = svc.spec.cache.pvc
    if pvc is None:
        return {"emptyDir": {}}
    if pvc.claim_name is not None:
        return {"persistentVolumeClaim": {"claimName": pvc.claim_name}}
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": pvc.size}},
    }
    if pvc.storage_class_name is not None:
        claim_spec["storageClassName"] = pvc.storage_class_name
    template = {"metadata": {"labels": labels(svc)}, "spec": claim_spec}
    return {"ephemeral": {"volumeClaimTemplate": template}}


def _fetch_container(svc: LLMService, image: str) -> dict[str, Any]:
    env = [*_writable_home_env(), {"name": "HF_HOME", "value": f"{CACHE_DIR}/.hf-home"}]
    if svc.spec.model.credentials_secret_ref is not None:
        env.append(_secret_env("HF_TOKEN", svc.spec.model.credentials_secret_ref))
    return {
        "name": FETCH_CONTAINER,
        "image": image,
        "command": fetch_command(svc),
        "env": env,
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "model-cache", "mountPath": CACHE_DIR},
        ],
    }


def _server_container(svc: LLMService, image: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    env = _writable_home_env()
    if svc.spec.auth is not None:
        env.append(_secret_env(API_KEY_ENV, svc.spec.auth.api_key_secret_ref))
    return {
        "name": CONTAINER,
        "image": image,
        "command": ["llmservice", "serve"],
        "args": server_args(svc),
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(svc),
        "startupProbe": _startup_probe(svc),
        **_probes(),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SLEEP_SECONDS)]}}},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }


def _tolerations(svc: LLMService) -> list[dict[str, Any]]:
    tolerations = [
        t.model_dump(by_alias=True, exclude_none=True) for t in svc.spec.scheduling.tolerations
    ]
    if svc.spec.resources.gpus > 0:
        # GPU node pools are commonly tainted with the device resource name (GKE, AKS, EKS).
        gpu = svc.spec.resources.gpu_resource_name
        tolerations.append({"key": gpu, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def build_pod_template(svc: LLMService, image: str) -> dict[str, Any]:
    """The Deployment's spec.template."""
    volumes, mounts = _volumes(svc)
    scheduling = svc.spec.scheduling
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the model server never talks to the API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": svc.spec.shutdown_timeout_seconds + GRACE_MARGIN_SECONDS,
        "securityContext": _pod_security(),
        "containers": [_server_container(svc, image, mounts)],
        "volumes": volumes,
    }
    if model_location(svc).hf_repo is not None:
        spec["initContainers"] = [_fetch_container(svc, image)]
    if scheduling.node_selector:
        spec["nodeSelector"] = dict(scheduling.node_selector)
    tolerations = _tolerations(svc)
    if tolerations:
        spec["tolerations"] = tolerations
    if scheduling.affinity is not None:
        spec["affinity"] = scheduling.affinity
    if scheduling.priority_class_name is not None:
        spec["priorityClassName"] = scheduling.priority_class_name
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(SERVER_PORT),
        "prometheus.io/path": "/metrics",
    }
    return {"metadata": {"labels": labels(svc), "annotations": annotations}, "spec": spec}
