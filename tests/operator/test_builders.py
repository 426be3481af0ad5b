"""Every builder, called directly: an LLMService in, the manifest a person would read out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from llmservice.operator.builders import build_all, unwanted_kinds
from llmservice.operator.builders.deployment import build_deployment
from llmservice.operator.builders.hpa import build_hpa
from llmservice.operator.builders.network_policy import build_network_policy
from llmservice.operator.builders.pdb import build_pdb
from llmservice.operator.builders.service import build_service
from llmservice.operator.resource import LLMService
from llmservice.operator.settings import Settings

SETTINGS = Settings(default_image="registry.local/runtime:1", operator_namespace="llm-system")
MakeSvc = Callable[..., LLMService]


def _pod(svc: LLMService) -> dict[str, Any]:
    return build_deployment(svc, SETTINGS)["spec"]["template"]["spec"]


def _server(svc: LLMService) -> dict[str, Any]:
    (container,) = _pod(svc)["containers"]
    return container


def test_every_object_is_labelled_and_owned(make_svc: MakeSvc) -> None:
    svc = make_svc(autoscaling={"enabled": True})
    manifests = build_all(svc, SETTINGS)
    assert [m["kind"] for m in manifests] == [
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
    ]
    for manifest in manifests:
        meta = manifest["metadata"]
        assert (meta["name"], meta["namespace"]) == ("demo", "team")
        assert meta["labels"] == {
            "app.kubernetes.io/name": "llmservice",
            "app.kubernetes.io/instance": "demo",
            "app.kubernetes.io/managed-by": "llmservice-operator",
        }
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "llmservice.io/v1alpha1",
                "kind": "LLMService",
                "name": "demo",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert "&id" not in yaml.safe_dump_all(manifests), "builders must not share sub-objects"


def test_switched_off_objects_are_not_built(make_svc: MakeSvc) -> None:
    svc = make_svc(networkPolicy={"enabled": False})
    assert [m["kind"] for m in build_all(svc, SETTINGS)] == [
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    ]
    assert [kind for _, kind, _ in unwanted_kinds(svc, SETTINGS)] == [
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
    ]


def test_gpu_limits_use_the_resource_name_and_tolerate_its_taint(make_svc: MakeSvc) -> None:
    svc = make_svc(
        resources={"gpus": 2, "gpuResourceName": "amd.com/gpu", "cpu": 6, "memory": "40Gi"}
    )
    resources = _server(svc)["resources"]
    assert resources["limits"] == {"memory": "40Gi", "amd.com/gpu": 2}
    assert resources["requests"] == {"cpu": "6", "memory": "40Gi", "amd.com/gpu": 2}
    assert {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in _pod(svc)[
        "tolerations"
    ]


def test_a_cpu_model_gets_no_gpu_and_runs_on_the_cpu(make_svc: MakeSvc) -> None:
    svc = make_svc(resources={"gpus": 0, "cpu": "1", "memory": "2Gi"})
    assert "nvidia.com/gpu" not in _server(svc)["resources"]["limits"]
    assert "tolerations" not in _pod(svc)
    assert "--device=cpu" in _server(svc)["args"]


def test_scheduling_fields_reach_the_pod(make_svc: MakeSvc) -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}
    svc = make_svc(
        scheduling={
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [
                {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoExecute"}
            ],
            "affinity": affinity,
            "priorityClassName": "llm-high",
        }
    )
    pod = _pod(svc)
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"][0] == {
        "key": "team",
        "operator": "Equal",
        "value": "ml",
        "effect": "NoExecute",
    }
    assert pod["affinity"] == affinity and pod["priorityClassName"] == "llm-high"


def test_probes_fit_long_model_loads(make_svc: MakeSvc) -> None:
    server = _server(make_svc(startupTimeoutSeconds=3600))
    startup = server["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3600
    assert server["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_shutdown_drains_within_the_grace_period(make_svc: MakeSvc) -> None:
    svc = make_svc(shutdownTimeoutSeconds=90)
    assert _pod(svc)["terminationGracePeriodSeconds"] == 105
    assert "--shutdown-timeout=90" in _server(svc)["args"]
    assert _server(svc)["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}


def test_shm_is_memory_backed_with_the_size_limit(make_svc: MakeSvc) -> None:
    svc = make_svc(shmSize="16Gi")
    volumes = {v["name"]: v for v in _pod(svc)["volumes"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in _server(svc)["volumeMounts"]


def test_the_model_cache_volume_follows_spec_cache(make_svc: MakeSvc) -> None:
    def cache(svc: LLMService) -> dict[str, Any]:
        return {v["name"]: v for v in _pod(svc)["volumes"]}["model-cache"]

    assert cache(make_svc())["emptyDir"] == {}
    claimed = make_svc(cache={"pvc": {"claimName": "weights"}})
    assert cache(claimed)["persistentVolumeClaim"] == {"claimName": "weights"}
    sized = cache(make_svc(cache={"pvc": {"size": "500Gi", "storageClassName": "nvme"}}))
    claim_spec = sized["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim_spec["resources"] == {"requests": {"storage": "500Gi"}}
    assert claim_spec["storageClassName"] == "nvme"


def test_the_pod_runs_as_non_root_without_privileges(make_svc: MakeSvc) -> None:
    pod = _pod(make_svc())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = _server(make_svc())["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_engine_settings_become_runtime_flags(make_svc: MakeSvc) -> None:
    svc = make_svc(
        model={"name": "Qwen/Qwen3-8B", "source": "builtin:tiny-reasoner"},
        engine={
            "tensorParallelSize": 1,
            "maxModelLen": 8192,
            "maxNumSeqs": 64,
            "maxNumBatchedTokens": 4096,
            "enablePrefixCaching": False,
            "schedulingPolicy": "priority",
            "reasoningParser": "qwen3",
            "dtype": "bfloat16",
            "extraArgs": ["--max-log-len=100"],
        },
    )
    server = _server(svc)
    assert server["command"] == ["llmservice", "serve"]
    assert server["args"] == [
        "builtin:tiny-reasoner",
        "--host=0.0.0.0",
        "--port=8000",
        "--served-model-name=Qwen/Qwen3-8B",
        "--tensor-parallel-size=1",
        "--gpu-memory-utilization=0.9",
        "--dtype=bfloat16",
        "--scheduling-policy=priority",
        "--no-enable-prefix-caching",
        "--shutdown-timeout=60",
        "--max-model-len=8192",
        "--max-num-seqs=64",
        "--max-num-batched-tokens=4096",
        "--reasoning-parser=qwen3",
        "--max-log-len=100",
    ]


def test_the_api_key_comes_from_the_secret(make_svc: MakeSvc) -> None:
    server = _server(make_svc(auth={"apiKeySecretRef": {"name": "keys", "key": "llm"}}))
    env = {e["name"]: e for e in server["env"]}
    assert env["LLMSERVICE_API_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "keys", "key": "llm"}
    }
    # the runtime reads the variable itself; an argument would show the key in `ps` on the node
    assert not [arg for arg in server["args"] if arg.startswith("--api-key")]


def test_an_hf_model_is_downloaded_into_the_cache_first(make_svc: MakeSvc) -> None:
    svc = make_svc(
        model={
            "name": "llama",
            "source": "hf://meta-llama/Llama-3.1-8B",
            "revision": "v1",
            "credentialsSecretRef": {"name": "hf", "key": "token"},
        }
    )
    (fetch,) = _pod(svc)["initContainers"]
    folder = "/models/hf/meta-llama/Llama-3.1-8B/v1"
    assert fetch["command"] == [
        "hf",
        "download",
        "meta-llama/Llama-3.1-8B",
        "--revision",
        "v1",
        "--local-dir",
        folder,
    ]
    env = {e["name"]: e for e in fetch["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert _server(svc)["args"][0] == folder
    assert fetch["image"] == _server(svc)["image"] == SETTINGS.default_image


def test_a_pvc_model_is_mounted_read_only(make_svc: MakeSvc) -> None:
    svc = make_svc(model={"name": "m", "source": "pvc://models/llama/8b"})
    volumes = {v["name"]: v for v in _pod(svc)["volumes"]}
    assert volumes["model-source"]["persistentVolumeClaim"] == {
        "claimName": "models",
        "readOnly": True,
    }
    assert _server(svc)["args"][0] == "/model-source/llama/8b"
    assert "initContainers" not in _pod(svc)


def test_spec_image_overrides_the_operator_default(make_svc: MakeSvc) -> None:
    assert _server(make_svc())["image"] == "registry.local/runtime:1"
    assert _server(make_svc(image="mine:2"))["image"] == "mine:2"


def test_the_rollout_needs_no_spare_gpu(make_svc: MakeSvc) -> None:
    deployment = build_deployment(make_svc(replicas=3), SETTINGS)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert deployment["spec"]["progressDeadlineSeconds"] > 1800
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "llmservice",
        "app.kubernetes.io/instance": "demo",
    }


def test_with_autoscaling_the_hpa_owns_the_replicas(make_svc: MakeSvc) -> None:
    svc = make_svc(
        autoscaling={
            "enabled": True,
            "minReplicas": 2,
            "maxReplicas": 6,
            "metric": "kv_cache_usage_perc",
            "target": "800m",
        }
    )
    assert "replicas" not in build_deployment(svc, SETTINGS)["spec"]
    hpa = build_hpa(svc)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "llmservice:kv_cache_usage_perc"},
                "target": {"type": "AverageValue", "averageValue": "800m"},
            },
        }
    ]


def test_the_service_exposes_port_8000_named_http(make_svc: MakeSvc) -> None:
    service = build_service(make_svc())
    assert service["spec"]["ports"] == [
        {
            "name": "http",
            "port": 8000,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        }
    ]
    assert (
        service["spec"]["selector"]
        == build_deployment(make_svc(), SETTINGS)["spec"]["selector"]["matchLabels"]
    )


def test_the_network_policy_admits_only_allow_from_and_the_operator(make_svc: MakeSvc) -> None:
    peer = {
        "namespaceSelector": {"matchLabels": {"team": "apps"}},
        "podSelector": {"matchLabels": {"role": "client"}},
    }
    policy = build_network_policy(make_svc(networkPolicy={"allowFrom": [peer]}), SETTINGS)["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert rule["from"] == [
        {
            "podSelector": {"matchLabels": {"role": "client"}},
            "namespaceSelector": {"matchLabels": {"team": "apps"}},
        },
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "llm-system"}}},
    ]


def test_the_default_network_policy_admits_the_same_namespace(make_svc: MakeSvc) -> None:
    (rule,) = build_network_policy(make_svc(), SETTINGS)["spec"]["ingress"]
    assert rule["from"][0] == {"podSelector": {}}


def test_the_disruption_budget_never_blocks_drains_on_broken_pods(make_svc: MakeSvc) -> None:
    pdb = build_pdb(make_svc(disruptionBudget={"maxUnavailable": "50%"}))["spec"]
    assert pdb["maxUnavailable"] == "50%"
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
