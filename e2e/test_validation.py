"""The API server itself rejects invalid LLMServices (OpenAPI schema and CEL rules of the CRD),
with a message that names the offending field; nothing is created.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from cluster import CommandError, Kubectl
from support.llmservices import small_llmservice

Obj = dict[str, Any]


def _with(changes: dict[str, Any]) -> Obj:
    """The small LLMService with each dotted `spec.<path>` set to its value (None deletes it)."""
    manifest = small_llmservice("invalid", "placeholder")
    for path, value in changes.items():
        node = manifest["spec"]
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return manifest


INVALID: list[tuple[str, Obj, str]] = [
    ("missing-model", _with({"model": None}), "spec.model"),
    ("missing-model-name", _with({"model.name": None}), "spec.model.name"),
    ("unknown-source-scheme", _with({"model.source": "s3://bucket/llama"}), "spec.model.source"),
    ("negative-replicas", _with({"replicas": -1}), "spec.replicas"),
    ("too-many-gpus", _with({"resources.gpus": 65}), "spec.resources.gpus"),
    (
        "bad-gpu-resource-name",
        _with({"resources.gpuResourceName": "gpu"}),
        "spec.resources.gpuResourceName",
    ),
    ("memory-not-a-quantity", _with({"resources.memory": "lots"}), "spec.resources.memory"),
    (
        "fewer-gpus-than-tensor-parallel",
        _with({"engine": {"tensorParallelSize": 4}}),
        "spec.resources.gpus",
    ),
    (
        "gpu-memory-utilization-above-1",
        _with({"engine.gpuMemoryUtilization": 1.5}),
        "spec.engine.gpuMemoryUtilization",
    ),
    ("tiny-max-model-len", _with({"engine.maxModelLen": 8}), "spec.engine.maxModelLen"),
    (
        "label-key-too-long",
        _with({"networkPolicy.allowFrom": [{"podSelector": {"matchLabels": {"k" * 318: "v"}}}]}),
        "spec.networkPolicy.allowFrom[0].podSelector.matchLabels",
    ),
    (
        "unknown-scheduling-policy",
        _with({"engine.schedulingPolicy": "lifo"}),
        "spec.engine.schedulingPolicy",
    ),
    (
        "unknown-reasoning-parser",
        _with({"engine.reasoningParser": "gpt"}),
        "spec.engine.reasoningParser",
    ),
    ("unknown-dtype", _with({"engine.dtype": "int4"}), "spec.engine.dtype"),
    (
        "operator-owned-extra-arg",
        _with({"engine.extraArgs": ["--port=9000"]}),
        "spec.engine.extraArgs",
    ),
    (
        "min-above-max-replicas",
        _with({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}),
        "spec.autoscaling.minReplicas",
    ),
    (
        "unknown-autoscaling-metric",
        _with({"autoscaling": {"enabled": True, "metric": "gpu_util"}}),
        "spec.autoscaling.metric",
    ),
    (
        "replicas-with-autoscaling",
        _with({"autoscaling": {"enabled": True}, "replicas": 2}),
        "spec.replicas",
    ),
    (
        "claim-and-size",
        _with({"cache": {"pvc": {"claimName": "models", "size": "10Gi"}}}),
        "spec.cache.pvc",
    ),
    (
        "rollout-that-cannot-progress",
        _with({"rollout": {"maxSurge": 0, "maxUnavailable": 0}}),
        "spec.rollout.maxUnavailable",
    ),
    ("shm-not-a-quantity", _with({"shmSize": "big"}), "spec.shmSize"),
    (
        "shutdown-timeout-too-long",
        _with({"shutdownTimeoutSeconds": 5000}),
        "spec.shutdownTimeoutSeconds",
    ),
    ("unknown-field", _with({"replica": 2}), "spec.replica"),
    # Accepted before the schema fuzz (tests/operator/test_fuzz_render.py), refused later by
    # the runtime's argument parser or by Kubernetes on the objects the operator creates:
    (
        "abbreviated-operator-owned-arg",
        _with({"engine.extraArgs": ["--por=9000"]}),
        "spec.engine.extraArgs",
    ),
    (
        "node-selector-value-not-a-label",
        _with({"scheduling": {"nodeSelector": {"gpu": "--"}}}),
        "spec.scheduling.nodeSelector",
    ),
    ("zero-cache-size", _with({"cache": {"pvc": {"size": "0Gi"}}}), "spec.cache.pvc.size"),
]
# A valid object name that cannot name a Service (clients connect to <name>.<namespace>.svc).
INVALID.append(("not-a-dns-label", small_llmservice("llama.8b", "placeholder"), "metadata.name"))


@pytest.mark.usefixtures("chart")
@pytest.mark.parametrize(("manifest", "field"), [pytest.param(m, f, id=i) for i, m, f in INVALID])
def test_invalid_llmservice_is_rejected_naming_the_field(
    manifest: Obj, field: str, namespace: str, kubectl: Kubectl
) -> None:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["namespace"] = namespace
    with pytest.raises(CommandError) as rejected:
        kubectl.run("create", "-f", "-", stdin=yaml.safe_dump(manifest))
    message = rejected.value.stderr
    assert "LLMService" in message or "llmservices" in message, message
    assert field in message, f"the API server's message does not name {field}: {message}"
    assert kubectl.items("llms", namespace) == []


@pytest.mark.usefixtures("chart")
def test_model_source_is_immutable(namespace: str, kubectl: Kubectl) -> None:
    manifest = small_llmservice("pinned", namespace)
    kubectl.run("create", "-f", "-", stdin=yaml.safe_dump(manifest))
    manifest["spec"]["model"]["source"] = "hf://Qwen/Qwen3-8B"
    with pytest.raises(CommandError) as rejected:
        kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    assert "spec.model.source" in rejected.value.stderr
    assert "immutable" in rejected.value.stderr
    live = kubectl.get("llms", "pinned", namespace)
    assert live["spec"]["model"]["source"] == "builtin:tiny-reasoner"
