"""The local control plane itself: real scheduling, fake GPU nodes, kwok's pod stages, RBAC, GC.

These pin down what the operator tests rely on, without the operator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import CommandError, ControlPlane, Kubectl, wait_for
from cluster.kubeconfig import write_kubeconfig

NAMESPACE = "e2e-harness"


def _deployment(name: str, gpus: int) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "server",
                                "image": "example.invalid/server:1",
                                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                            }
                        ]
                    },
                },
            },
        }
    )


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> Iterator[str]:
    kubectl.run("create", "namespace", NAMESPACE)
    yield NAMESPACE
    kubectl.run("delete", "namespace", NAMESPACE, "--wait=false")


def _only_pod(kubectl: Kubectl, app: str) -> dict[str, Any] | None:
    pods = kubectl.items("pods", NAMESPACE, f"app={app}")
    return pods[0] if len(pods) == 1 else None


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def _ready_pod(kubectl: Kubectl, app: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pod = _only_pod(kubectl, app)
        condition = pod and _condition(pod, "Ready")
        return pod if condition and condition["status"] == "True" else None

    return wait_for(
        ready,
        timeout=60,
        what=f"pod app={app} Ready",
        explain=lambda: kubectl.dump("deploy,rs,pods", namespace=NAMESPACE),
    )


def test_fake_nodes_and_version(kubectl: Kubectl) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl.items("nodes")}
    assert set(nodes) == {"gpu-node-0", "gpu-node-1", "cpu-node-0"}
    for name in ("gpu-node-0", "gpu-node-1"):
        assert nodes[name]["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert nodes[name]["spec"]["taints"] == [
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
        ]
    assert "nvidia.com/gpu" not in nodes["cpu-node-0"]["status"]["allocatable"]
    version = json.loads(kubectl.run("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.34.4"


def test_gpu_pod_is_scheduled_on_a_gpu_node_and_becomes_ready(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(_deployment("gpu-app", gpus=2))
    pod = _ready_pod(kubectl, "gpu-app")
    assert pod["spec"]["nodeName"] in {"gpu-node-0", "gpu-node-1"}
    # ExtendedResourceToleration admission let it onto the tainted GPU nodes.
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    assert pod["status"]["phase"] == "Running"
    wait_for(
        lambda: kubectl.get("deployment", "gpu-app", NAMESPACE)["status"].get("readyReplicas") == 1,
        timeout=60,
        what="Deployment gpu-app readyReplicas 1",
    )


def test_too_many_gpus_is_unschedulable_with_the_schedulers_message(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(_deployment("greedy-app", gpus=9))

    def unschedulable() -> dict[str, Any] | None:
        pod = _only_pod(kubectl, "greedy-app")
        condition = pod and _condition(pod, "PodScheduled")
        return condition if condition and condition.get("reason") == "Unschedulable" else None

    condition = wait_for(unschedulable, timeout=60, what="greedy-app Unschedulable")
    assert "Insufficient nvidia.com/gpu" in condition["message"]
    kubectl.run("delete", "deployment", "greedy-app", "-n", NAMESPACE)


@pytest.mark.parametrize(
    ("fault", "waiting", "last_terminated"),
    [
        ("crashloop", "CrashLoopBackOff", "Error"),
        ("oomkilled", "CrashLoopBackOff", "OOMKilled"),
        ("imagepullbackoff", "ImagePullBackOff", None),
    ],
)
def test_kwok_fault_stage_and_recovery(
    kubectl: Kubectl, namespace: str, fault: str, waiting: str, last_terminated: str | None
) -> None:
    app = f"fault-{fault}"
    kubectl.apply(_deployment(app, gpus=1))
    pod_name = _ready_pod(kubectl, app)["metadata"]["name"]
    kubectl.run("label", "pod", pod_name, "-n", NAMESPACE, f"e2e.llmservice.io/fault={fault}")

    def failing() -> dict[str, Any] | None:
        status = kubectl.get("pod", pod_name, NAMESPACE)["status"]["containerStatuses"][0]
        return status if status["state"].get("waiting", {}).get("reason") == waiting else None

    status = wait_for(failing, timeout=60, what=f"{pod_name} {waiting}")
    assert status["ready"] is False
    if last_terminated is not None:
        assert status["lastState"]["terminated"]["reason"] == last_terminated
        assert status["restartCount"] == 5
    kubectl.run("label", "pod", pod_name, "-n", NAMESPACE, "e2e.llmservice.io/fault-")
    recovered = _ready_pod(kubectl, app)
    assert recovered["metadata"]["name"] == pod_name
    assert recovered["status"]["containerStatuses"][0]["restartCount"] == status["restartCount"]
    kubectl.run("delete", "deployment", app, "-n", NAMESPACE)


def test_garbage_collector_removes_dependents(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(_deployment("gc-app", gpus=1))
    _ready_pod(kubectl, "gc-app")
    kubectl.run("delete", "deployment", "gc-app", "-n", NAMESPACE, "--wait=false")
    wait_for(
        lambda: not kubectl.items("replicasets,pods", NAMESPACE, "app=gc-app"),
        timeout=60,
        what="gc-app's ReplicaSet and pod to be garbage-collected",
    )


def test_rbac_is_enforced_for_service_account_tokens(
    kubectl: Kubectl, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    kubectl.run("create", "serviceaccount", "nobody", "-n", NAMESPACE)
    token = kubectl.run("create", "token", "nobody", "-n", NAMESPACE).stdout.strip()
    config = write_kubeconfig(
        tmp_path / "nobody", control_plane.server, control_plane.pki.cert("ca"), token=token
    )
    nobody = Kubectl(control_plane.bin_dir, config)
    with pytest.raises(CommandError, match="forbidden"):
        nobody.run("get", "pods", "-n", NAMESPACE)
    whoami = json.loads(nobody.run("auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{NAMESPACE}:nobody"


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.slow
def test_up_and_down_by_hand_leave_no_process_or_file(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    directory = tmp_path / "by-hand"
    cli = [sys.executable, str(Path(__file__).parent / "cluster")]
    up = subprocess.run(
        [*cli, "up", "--dir", str(directory)], capture_output=True, text=True, timeout=300
    )
    assert up.returncode == 0, up.stderr
    assert f"export KUBECONFIG={directory / 'kubeconfig'}" in up.stdout
    # `up` has exited; the components run on in their own process groups.
    state = json.loads((directory / "state.json").read_text())
    pids = [entry["pid"] for entry in state["processes"].values()]
    assert len(pids) == 5 and all(_running(pid) for pid in pids)
    by_hand = Kubectl(control_plane.bin_dir, directory / "kubeconfig")
    assert len(by_hand.items("nodes")) == 3
    env = subprocess.run([*cli, "env", "--dir", str(directory)], capture_output=True, text=True)
    assert f"export KUBECONFIG={directory / 'kubeconfig'}" in env.stdout

    subprocess.run([*cli, "down", "--dir", str(directory)], check=True, capture_output=True)
    assert not directory.exists()
    assert not any(_running(pid) for pid in pids)
