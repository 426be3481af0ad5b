"""Every example LLMService, applied as a user would: owned objects, scheduling, status.

Each example runs in a fresh namespace with what an admin would provide first (Secrets,
volumes, a PriorityClass: support/prerequisites.py). Then:
- the owned objects are exactly what `llmservice render` prints for the same file (the GitOps
  preview is the truth), carry the labels and a controller owner reference, and match the spec
  field by field;
- the pods land on GPU nodes (CPU-only services on the CPU node);
- once kwok marks the pods ready, the status says Ready with readyReplicas, url and
  observedGeneration, and `kubectl get llms` prints it.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import Kubectl, wait_for
from support.chart import RUNTIME_IMAGE
from support.llmservices import EXAMPLES, LLMServices, in_namespace, load_manifests
from support.operator_process import LLMSERVICE, OperatorProcess
from support.prerequisites import prerequisites

Obj = dict[str, Any]
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by")
KIND_PLURALS = {
    "Deployment": "deployments.apps",
    "Service": "services",
    "NetworkPolicy": "networkpolicies.networking.k8s.io",
    "PodDisruptionBudget": "poddisruptionbudgets.policy",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers.autoscaling",
}


def _example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def contains(actual: Any, desired: Any) -> bool:
    """Whether every field of `desired` is in `actual` (server defaults may add more).

    Scalars compare as text: the API server returns e.g. a GPU count of 4 as "4".
    """
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    return str(actual) == str(desired)


def _rendered(manifest: Obj, operator: OperatorProcess) -> list[Obj]:
    """`llmservice render` of the manifest, with the operator's default image."""
    image = next(
        (
            e["value"]
            for e in operator.container.get("env", [])
            if e["name"] == "LLMSERVICE_DEFAULT_IMAGE"
        ),
        None,
    )
    command = [str(LLMSERVICE), "render", "-f", "-"]
    if image:
        command += ["--default-image", image]
    out = subprocess.run(
        command, input=yaml.safe_dump(manifest), check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _server_container(deployment: Obj) -> Obj:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "server")


def _check_deployment(deployment: Obj, spec: Obj, desired_replicas: int) -> None:
    pod = deployment["spec"]["template"]["spec"]
    server = _server_container(deployment)
    # Without spec.image, the image the chart configured (runtimeImage) reaches the pods.
    assert server["image"] == spec.get("image", RUNTIME_IMAGE)
    resources = spec.get("resources", {})
    gpus = int(resources.get("gpus", 1))
    gpu_name = resources.get("gpuResourceName", "nvidia.com/gpu")
    limits = server["resources"]["limits"]
    if gpus > 0:
        assert limits[gpu_name] == str(gpus)
    else:
        assert gpu_name not in limits
    assert server["resources"]["requests"]["cpu"] == str(resources.get("cpu", "8"))
    assert server["resources"]["requests"]["memory"] == str(resources.get("memory", "64Gi"))
    assert server["startupProbe"]["httpGet"]["path"] == "/health"
    assert server["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/health"
    assert server["lifecycle"]["preStop"]
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": str(spec.get("shmSize", "8Gi"))}
    assert {"name": "shm", "mountPath": "/dev/shm"} in server["volumeMounts"]
    shutdown = int(spec.get("shutdownTimeoutSeconds", 60))
    assert pod["terminationGracePeriodSeconds"] == shutdown + 15
    args = " ".join([*server.get("command", []), *server.get("args", [])])
    assert f"--shutdown-timeout {shutdown}" in args or f"--shutdown-timeout={shutdown}" in args
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["replicas"] == desired_replicas


def _check_children(children: dict[str, list[Obj]], llmservice: Obj, desired_replicas: int) -> None:
    spec = llmservice["spec"]
    name = llmservice["metadata"]["name"]
    expected = {"Deployment", "Service", "PodDisruptionBudget"}
    if spec.get("networkPolicy", {}).get("enabled", True):
        expected.add("NetworkPolicy")
    if spec.get("autoscaling", {}).get("enabled", False):
        expected.add("HorizontalPodAutoscaler")
    assert set(children) == expected
    for kind, objs in children.items():
        assert len(objs) == 1, f"{kind}: {len(objs)} objects"
        labels = objs[0]["metadata"]["labels"]
        assert {key: labels.get(key) for key in LABELS} == {
            "app.kubernetes.io/name": "llmservice",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "llmservice-operator",
        }, kind
        (ref,) = objs[0]["metadata"]["ownerReferences"]
        assert ref["kind"] == "LLMService" and ref["name"] == name
        assert ref["controller"] is True and ref["blockOwnerDeletion"] is True
    _check_deployment(children["Deployment"][0], spec, desired_replicas)
    (port,) = children["Service"][0]["spec"]["ports"]
    assert (port["name"], port["port"]) == ("http", 8000)
    pdb = children["PodDisruptionBudget"][0]["spec"]
    assert str(pdb["maxUnavailable"]) == str(
        spec.get("disruptionBudget", {}).get("maxUnavailable", 1)
    )
    if "HorizontalPodAutoscaler" in children:
        hpa = children["HorizontalPodAutoscaler"][0]["spec"]
        autoscaling = spec["autoscaling"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (
            autoscaling.get("minReplicas", 1),
            autoscaling.get("maxReplicas", 4),
        )
        (metric,) = hpa["metrics"]
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"].endswith(
            autoscaling.get("metric", "num_requests_waiting")
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.stem)
def test_example(
    path: Path,
    namespace: str,
    kubectl: Kubectl,
    llmservices: LLMServices,
    operator: OperatorProcess,
) -> None:
    (manifest,) = [m for m in load_manifests(path) if m.get("kind") == "LLMService"]
    manifest = in_namespace(manifest, namespace)
    name = manifest["metadata"]["name"]
    spec = manifest["spec"]
    autoscaling = spec.get("autoscaling", {})
    desired = (
        autoscaling.get("minReplicas", 1) if autoscaling.get("enabled") else spec.get("replicas", 1)
    )
    for obj in prerequisites(manifest, namespace, desired):
        kubectl.apply(yaml.safe_dump(obj))
    llmservice = llmservices.apply(manifest)

    # The owned objects: what `llmservice render` prints, labelled, owned, as the spec says.
    for doc in _rendered(manifest, operator):
        plural, child = KIND_PLURALS[doc["kind"]], doc["metadata"]["name"]
        live = wait_for(
            functools.partial(kubectl.get_or_none, plural, child, namespace),
            timeout=60,
            what=f"{doc['kind']} {child}",
            explain=lambda: llmservices.explain(namespace),
        )
        assert contains(live, doc), (
            f"live {doc['kind']} differs from `llmservice render`:\n"
            f"rendered:\n{yaml.safe_dump(doc)}\nlive:\n{yaml.safe_dump(live)}"
        )
    _check_children(llmservices.children(llmservice), llmservice, desired)

    # Status: Ready once kwok made every pod ready.
    ready = llmservices.wait_ready(namespace, name)
    status = ready["status"]
    assert status["readyReplicas"] == status["replicas"] == desired
    assert status["observedGeneration"] == ready["metadata"]["generation"]
    assert status["url"] == f"http://{name}.{namespace}.svc.cluster.local:8000/v1"
    assert (
        status["selector"] == f"app.kubernetes.io/instance={name},app.kubernetes.io/name=llmservice"
    )

    # Scheduling: GPU services on GPU nodes, CPU-only ones on the CPU node.
    pods = llmservices.pods(namespace, name)
    assert len(pods) == desired
    gpu_nodes = {"gpu-node-0", "gpu-node-1"}
    for pod in pods:
        if int(spec.get("resources", {}).get("gpus", 1)) > 0:
            assert pod["spec"]["nodeName"] in gpu_nodes
        else:
            assert pod["spec"]["nodeName"] == "cpu-node-0"

    # What `kubectl get llms` prints (the CRD's printer columns).
    table = kubectl.run("get", "llms", name, "-n", namespace).stdout.splitlines()
    header = table[0].split()
    assert header[:1] == ["NAME"] and {"MODEL", "READY", "PHASE", "AGE"} <= set(header)
    row = dict(zip(header, table[1].split(), strict=False))
    assert row["MODEL"] == spec["model"]["name"]
    assert row["PHASE"] == "Ready"
