"""Why an LLMService's pods do not serve: one `Problem` with a reason and a message to act on.

A pure function of what the API server reports: pod conditions (the scheduler writes its
message into PodScheduled), container states (CrashLoopBackOff, OOMKilled, image pulls, missing
Secrets), the Deployment's conditions (ProgressDeadlineExceeded, ReplicaFailure) and Warning
events (volume mounts). A container that is ready again is not a problem, whatever its history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llmservice.operator.builders.pod import FETCH_CONTAINER
from llmservice.operator.labels import selector_string
from llmservice.operator.resource import LLMService

Obj = dict[str, Any]

# Most specific and most actionable first: the first kind found is the one reported.
SEVERITY = (
    "InvalidSpec",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "OOMKilled",
    "CrashLoopBackOff",
    "Unschedulable",
    "FailedMount",
    "FailedCreate",
    "ProgressDeadlineExceeded",
)
_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
_MOUNT_EVENTS = frozenset({"FailedMount", "FailedAttachVolume"})


@dataclass(frozen=True)
class Problem:
    """Something that keeps the LLMService from serving as asked."""

    reason: str
    """One of SEVERITY; becomes the Degraded condition's reason."""
    message: str
    """What happened, with the scheduler's / kubelet's own words, and what to change."""


def diagnose(
    svc: LLMService,
    deployment: Obj | None,
    pods: Sequence[Obj],
    events: Sequence[Obj] = (),
    apply_error: str | None = None,
) -> Problem | None:
    """The most severe problem, or None when nothing is wrong (pods may still be loading)."""
    found: list[Problem] = []
    if apply_error is not None:
        found.append(Problem("InvalidSpec", apply_error))
    live = sorted(
        (p for p in pods if not p.get("metadata", {}).get("deletionTimestamp")),
        key=lambda p: p.get("metadata", {}).get("name", ""),
    )
    for pod in live:
        found.extend(_pod_problems(svc, pod))
    found.extend(_event_problems(live, events))
    found.extend(_deployment_problems(svc, deployment))
    if not found:
        return None
    return min(found, key=lambda problem: SEVERITY.index(problem.reason))


def _pod_problems(svc: LLMService, pod: Obj) -> Iterable[Problem]:
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            yield Problem("Unschedulable", _unschedulable(svc, name, condition.get("message", "")))
    containers = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for container in containers:
        if not container.get("ready"):
            yield from _container_problems(svc, name, container)


def _unschedulable(svc: LLMService, pod: str, scheduler_message: str) -> str:
    res = svc.spec.resources
    gpus = f"{res.gpus} {res.gpu_resource_name}, " if res.gpus else ""
    return (
        f"pod {pod} cannot be scheduled: {scheduler_message.strip()} Each pod requests {gpus}"
        f"{res.cpu} CPU and {res.memory} memory: add or free capacity, or lower spec.resources "
        "(check spec.scheduling's nodeSelector, tolerations and affinity too)."
    )


def _container_problems(svc: LLMService, pod: str, container: Obj) -> Iterable[Problem]:
    name = container.get("name", "?")
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = (
        state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
    )
    reason = waiting.get("reason")
    where = f"container {name} of pod {pod}"
    if terminated.get("reason") == "OOMKilled":
        yield Problem(
            "OOMKilled",
            f"{where} was killed for exceeding its memory limit of {svc.spec.resources.memory} "
            f"(OOMKilled): raise spec.resources.memory (the {svc.spec.shm_size} /dev/shm counts "
            "against it) or lower spec.engine.maxNumSeqs.",
        )
    elif reason == "CrashLoopBackOff":
        yield Problem("CrashLoopBackOff", _crash_message(svc, pod, container, terminated))
    elif reason in _PULL_REASONS:
        yield Problem(
            "ImagePullBackOff",
            f"{where} cannot pull image {container.get('image', '?')}: {waiting.get('message', reason)}. "
            "Check spec.image (or the operator's default image) and the registry's credentials.",
        )
    elif reason == "CreateContainerConfigError":
        yield Problem(
            "CreateContainerConfigError",
            f"{where} cannot start: {waiting.get('message', reason)}. Create the Secret, or fix "
            "spec.auth.apiKeySecretRef / spec.model.credentialsSecretRef.",
        )


def _crash_message(svc: LLMService, pod: str, container: Obj, terminated: Obj) -> str:
    name = container.get("name", "?")
    code = terminated.get("exitCode", "?")
    restarts = container.get("restartCount", 0)
    logs = f"kubectl logs -n {svc.namespace} {pod} -c {name} --previous"
    if name == FETCH_CONTAINER:
        return (
            f"the model download (init container {name} of pod {pod}) keeps failing (exit code "
            f"{code}, {restarts} restarts): check spec.model.source, spec.model.revision and "
            f"spec.model.credentialsSecretRef; see `{logs}`."
        )
    return (
        f"container {name} of pod {pod} keeps crashing (exit code {code}, {restarts} restarts): "
        f"see `{logs}`."
    )


def _event_problems(pods: Sequence[Obj], events: Sequence[Obj]) -> Iterable[Problem]:
    running = {
        p["metadata"]["name"]: (p.get("status") or {}).get("phase") == "Running"
        for p in pods
        if "name" in p.get("metadata", {})
    }
    for event in events:
        involved = event.get("involvedObject") or {}
        pod = involved.get("name")
        if involved.get("kind") != "Pod" or pod not in running or running[pod]:
            continue
        if event.get("type") == "Warning" and event.get("reason") in _MOUNT_EVENTS:
            yield Problem(
                "FailedMount",
                f"pod {pod} cannot mount its volumes: {event.get('message', '')}. Check "
                "spec.cache.pvc and the claim of a pvc:// model source.",
            )


def _deployment_problems(svc: LLMService, deployment: Obj | None) -> Iterable[Problem]:
    if deployment is None:
        return
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        kind, status, reason = (
            condition.get("type"),
            condition.get("status"),
            condition.get("reason"),
        )
        message = condition.get("message", "")
        if kind == "ReplicaFailure" and status == "True":
            yield Problem("FailedCreate", f"pods cannot be created: {message}")
        elif kind == "Progressing" and status == "False" and reason == "ProgressDeadlineExceeded":
            yield Problem(
                "ProgressDeadlineExceeded",
                f"the rollout made no progress within its deadline: {message} See `kubectl "
                f"describe pods -n {svc.namespace} -l {selector_string(svc.name)}`; a slow model "
                "download or load needs a larger spec.startupTimeoutSeconds.",
            )
