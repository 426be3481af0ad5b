"""The schema's Python side: what `render` and the operator accept and reject, and why.

One row per mistake a person could make; the error must name the field. The same rules are in
the CRD for the API server (test_crd.py checks they are there; e2e shows the server applies them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from llmservice.operator.resource import InvalidLLMService, LLMService, parse_llmservice

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("negative replicas", {"replicas": -1}, "spec.replicas"),
    ("bad cpu quantity", {"resources": {"cpu": "eight"}}, "spec.resources.cpu"),
    ("memory in GB", {"resources": {"memory": "64GB"}}, "spec.resources.memory"),
    ("shm not a quantity", {"shmSize": "lots"}, "spec.shmSize"),
    (
        "gpus below TP",
        {"resources": {"gpus": 2}, "engine": {"tensorParallelSize": 4}},
        "spec.resources.gpus",
    ),
    (
        "min above max",
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.autoscaling.minReplicas",
    ),
    (
        "replicas with autoscaling",
        {"replicas": 2, "autoscaling": {"enabled": True}},
        "spec.replicas",
    ),
    ("unknown metric", {"autoscaling": {"metric": "gpu_util"}}, "spec.autoscaling.metric"),
    ("unknown policy", {"engine": {"schedulingPolicy": "lifo"}}, "spec.engine.schedulingPolicy"),
    ("unknown parser", {"engine": {"reasoningParser": "r2"}}, "spec.engine.reasoningParser"),
    ("unknown dtype", {"engine": {"dtype": "int3"}}, "spec.engine.dtype"),
    (
        "utilization zero",
        {"engine": {"gpuMemoryUtilization": 0}},
        "spec.engine.gpuMemoryUtilization",
    ),
    (
        "utilization above 1",
        {"engine": {"gpuMemoryUtilization": 1.5}},
        "spec.engine.gpuMemoryUtilization",
    ),
    ("reserved extra arg", {"engine": {"extraArgs": ["--port=9000"]}}, "spec.engine.extraArgs"),
    (
        "bad secret name",
        {"auth": {"apiKeySecretRef": {"name": "My_Secret", "key": "k"}}},
        "spec.auth.apiKeySecretRef.name",
    ),
    ("claim and size", {"cache": {"pvc": {"claimName": "c", "size": "10Gi"}}}, "spec.cache.pvc"),
    (
        "class without size",
        {"cache": {"pvc": {"claimName": "c", "storageClassName": "fast"}}},
        "spec.cache.pvc.storageClassName",
    ),
    (
        "rollout cannot progress",
        {"rollout": {"maxSurge": 0, "maxUnavailable": "0%"}},
        "spec.rollout.maxSurge",
    ),
    (
        "bad percentage",
        {"disruptionBudget": {"maxUnavailable": "150%"}},
        "spec.disruptionBudget.maxUnavailable",
    ),
    (
        "bad gpu resource",
        {"resources": {"gpuResourceName": "gpu"}},
        "spec.resources.gpuResourceName",
    ),
    ("misspelt field", {"replica": 2}, "spec.replica"),
    ("shutdown too long", {"shutdownTimeoutSeconds": 7200}, "spec.shutdownTimeoutSeconds"),
    # Found by test_fuzz_render.py: accepted before, then refused by Kubernetes or the runtime.
    (
        "abbreviated reserved flag",
        {"engine": {"extraArgs": ["--por=9000"]}},
        "spec.engine.extraArgs",
    ),
    (
        "reserved flag with a newline value",
        {"engine": {"extraArgs": ["--port=\n9001"]}},
        "spec.engine.extraArgs",
    ),
    ("node selector value", {"scheduling": {"nodeSelector": {"gpu": "--"}}}, "spec.scheduling"),
    ("node selector key", {"scheduling": {"nodeSelector": {"a b": "x"}}}, "spec.scheduling"),
    (
        "toleration without key or Exists",
        {"scheduling": {"tolerations": [{"value": "x"}]}},
        "spec.scheduling.tolerations",
    ),
    (
        "tolerationSeconds without NoExecute",
        {"scheduling": {"tolerations": [{"key": "k", "tolerationSeconds": 5}]}},
        "spec.scheduling.tolerations",
    ),
    (
        "toleration Exists with a value",
        {"scheduling": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}},
        "spec.scheduling.tolerations",
    ),
    ("empty peer", {"networkPolicy": {"allowFrom": [{}]}}, "spec.networkPolicy.allowFrom"),
    (
        "ipBlock with a selector",
        {"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}},
        "spec.networkPolicy.allowFrom",
    ),
    (
        "In without values",
        {
            "networkPolicy": {
                "allowFrom": [
                    {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}
                ]
            }
        },
        "spec.networkPolicy.allowFrom",
    ),
    ("zero cache size", {"cache": {"pvc": {"size": "0Gi"}}}, "spec.cache.pvc.size"),
    ("zero autoscaling target", {"autoscaling": {"target": "0"}}, "spec.autoscaling.target"),
    ("maxSurge beyond int32", {"rollout": {"maxSurge": 2**31}}, "spec.rollout.maxSurge"),
    (
        "disruption budget beyond int32",
        {"disruptionBudget": {"maxUnavailable": 2**40}},
        "spec.disruptionBudget.maxUnavailable",
    ),
]


@pytest.mark.parametrize(("case", "spec", "field"), INVALID, ids=[row[0] for row in INVALID])
def test_an_invalid_spec_is_rejected_naming_the_field(
    body: dict[str, Any], case: str, spec: dict[str, Any], field: str
) -> None:
    body["spec"].update(spec)
    with pytest.raises(InvalidLLMService) as error:
        parse_llmservice(body)
    assert field in str(error.value)


@pytest.mark.parametrize(
    "source",
    ["s3://bucket/model", "hf://just-a-name", "pvc://Bad_Claim/x", "builtin:", "/abs/path"],
)
def test_a_model_source_in_an_unknown_form_is_rejected(body: dict[str, Any], source: str) -> None:
    body["spec"]["model"]["source"] = source
    with pytest.raises(InvalidLLMService, match=r"spec\.model\.source must be hf://"):
        parse_llmservice(body)


@pytest.mark.parametrize("name", ["Demo", "9lives", "a" * 64, "has.dot"])
def test_the_name_must_be_a_dns_1035_label(body: dict[str, Any], name: str) -> None:
    body["metadata"]["name"] = name
    with pytest.raises(InvalidLLMService, match=r"metadata\.name must be a DNS-1035 label"):
        parse_llmservice(body)


def test_defaults_follow_the_design(make_svc: Callable[..., LLMService]) -> None:
    spec = make_svc().spec
    assert (spec.resources.gpus, spec.resources.gpu_resource_name) == (1, "nvidia.com/gpu")
    assert (spec.resources.cpu, spec.resources.memory, spec.shm_size) == ("8", "64Gi", "8Gi")
    assert spec.engine.gpu_memory_utilization == 0.9
    assert spec.engine.enable_prefix_caching and spec.engine.scheduling_policy == "fcfs"
    assert not spec.autoscaling.enabled
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (1, 4)
    assert (spec.autoscaling.metric, spec.autoscaling.target) == ("num_requests_waiting", "5")
    assert spec.network_policy.enabled and spec.shutdown_timeout_seconds == 60
    assert (spec.rollout.max_surge, spec.rollout.max_unavailable) == (0, 1)
    assert spec.disruption_budget.max_unavailable == 1
    assert spec.replicas is None and make_svc().replicas == 1


def test_integer_quantities_are_kept_as_kubernetes_strings(
    make_svc: Callable[..., LLMService],
) -> None:
    svc = make_svc(resources={"cpu": 4, "memory": "16Gi"}, shmSize="512Mi")
    assert svc.spec.resources.cpu == "4"


def test_every_problem_is_listed_at_once(body: dict[str, Any]) -> None:
    body["spec"].update(replicas=-1, shmSize="x")
    with pytest.raises(InvalidLLMService) as error:
        parse_llmservice(body)
    assert "spec.replicas" in str(error.value) and "spec.shmSize" in str(error.value)


def test_the_examples_are_valid(
    example_path: Any, load_example: Callable[..., dict[str, Any]]
) -> None:
    svc = parse_llmservice(load_example(example_path))
    assert svc.url == f"http://{svc.name}.{svc.namespace}.svc.cluster.local:8000/v1"
