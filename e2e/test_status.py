"""Status tells the truth: Degraded with the reason when pods cannot run, Ready again after.

Unschedulable comes from the real scheduler (more GPUs than a node has); crash loops, OOM kills
and image pull failures from kwok's fault stage on a labelled pod (e2e/cluster/stages.yaml).
"""

from __future__ import annotations

import pytest
from cluster import Kubectl, wait_for
from support.llmservices import LLMServices, condition, holds, small_llmservice

FAULT_LABEL = "e2e.llmservice.io/fault"


@pytest.mark.slow
def test_more_gpus_than_a_node_has_is_degraded_unschedulable(
    namespace: str, kubectl: Kubectl, llmservices: LLMServices
) -> None:
    manifest = small_llmservice("greedy", namespace, gpus=9)
    llmservices.apply(manifest)
    degraded = llmservices.wait(
        namespace,
        "greedy",
        lambda obj: holds(obj, "Degraded", "Unschedulable") and not holds(obj, "Ready"),
        "Degraded Unschedulable, not Ready",
    )
    message = condition(degraded, "Degraded")["message"]  # type: ignore[index]
    # The scheduler's own words, as it wrote them into the pod's PodScheduled condition.
    (pod,) = llmservices.pods(namespace, "greedy")
    scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert scheduled["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert scheduled["message"] in message
    assert degraded["status"]["phase"] == "Degraded"
    assert degraded["status"]["readyReplicas"] == 0

    # Asking for what a node has fixes it.
    manifest["spec"]["resources"]["gpus"] = 2
    llmservices.apply(manifest)
    ready = llmservices.wait_ready(namespace, "greedy")
    assert ready["metadata"]["generation"] == 2
    assert condition(ready, "Degraded")["status"] == "False"  # type: ignore[index]

    # `kubectl describe llms greedy` tells the same story in events.
    def events() -> list[tuple[str, str]] | None:
        items = kubectl.get("events", namespace=namespace)["items"]
        seen = [
            (e["type"], e["reason"])
            for e in sorted(items, key=lambda e: e.get("lastTimestamp") or "")
            if e["involvedObject"]["kind"] == "LLMService"
            and e["involvedObject"]["name"] == "greedy"
        ]
        return seen if ("Normal", "Ready") in seen else None

    seen = wait_for(events, timeout=30, what="the LLMService's Ready event")
    assert ("Warning", "Unschedulable") in seen and ("Normal", "Recovered") in seen


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("crashloop", "CrashLoopBackOff"),
        ("oomkilled", "OOMKilled"),
        ("imagepullbackoff", "ImagePullBackOff"),
    ],
)
def test_failing_pod_is_degraded_with_its_reason_then_recovers(
    fault: str, reason: str, namespace: str, kubectl: Kubectl, llmservices: LLMServices
) -> None:
    llmservices.apply(small_llmservice("flaky", namespace))
    llmservices.wait_ready(namespace, "flaky")
    (pod,) = llmservices.pods(namespace, "flaky")
    pod_name = pod["metadata"]["name"]

    kubectl.run("label", "pod", pod_name, "-n", namespace, f"{FAULT_LABEL}={fault}")
    # The Deployment's readyReplicas follows the pod a moment later: wait for the whole picture.
    degraded = llmservices.wait(
        namespace,
        "flaky",
        lambda obj: (
            holds(obj, "Degraded", reason)
            and not holds(obj, "Ready")
            and obj["status"].get("readyReplicas") == 0
        ),
        f"Degraded {reason}, not Ready, no ready replica",
    )
    assert degraded["status"]["phase"] == "Degraded"
    message = condition(degraded, "Degraded")["message"]  # type: ignore[index]
    assert pod_name in message or "server" in message, message

    # The container comes back (kwok's pod-ready stage once the fault label is gone).
    kubectl.run("label", "pod", pod_name, "-n", namespace, f"{FAULT_LABEL}-")
    ready = llmservices.wait_ready(namespace, "flaky")
    assert condition(ready, "Degraded")["status"] == "False"  # type: ignore[index]
    (recovered,) = llmservices.pods(namespace, "flaky")
    assert recovered["metadata"]["name"] == pod_name  # the same pod, restarted in place
