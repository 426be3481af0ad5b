"""Status derivation, table-driven: one row per reason a person may see on `kubectl get llms`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from llmservice.operator.resource import LLMService
from llmservice.operator.schema import LLMServiceStatus
from llmservice.operator.status import Observed, derive_status, invalid_status

NOW = "2030-01-01T00:00:00Z"
Obj = dict[str, Any]


def deployment(
    replicas: int = 1,
    ready: int = 0,
    updated: int | None = None,
    conditions: list[Obj] | None = None,
) -> Obj:
    return {
        "metadata": {"name": "demo", "generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": replicas if updated is None else updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": conditions or [],
        },
    }


def pod(
    name: str = "demo-abc",
    phase: str = "Pending",
    conditions: list[Obj] | None = None,
    containers: list[Obj] | None = None,
    init: list[Obj] | None = None,
) -> Obj:
    status: Obj = {"phase": phase, "conditions": conditions or []}
    if containers is not None:
        status["containerStatuses"] = containers
    if init is not None:
        status["initContainerStatuses"] = init
    return {"metadata": {"name": name}, "status": status}


def waiting(reason: str, message: str = "", name: str = "server", **extra: Any) -> Obj:
    return {
        "name": name,
        "ready": False,
        "image": "img:1",
        "state": {"waiting": {"reason": reason, "message": message}},
        **extra,
    }


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
}
OOM = {
    "name": "server",
    "ready": False,
    "restartCount": 3,
    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
}
CRASH = {
    "name": "server",
    "ready": False,
    "restartCount": 5,
    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
    "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
}
DEADLINE = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "demo-1" has timed out progressing.',
}
QUOTA = {
    "type": "ReplicaFailure",
    "status": "True",
    "reason": "FailedCreate",
    "message": 'pods "demo-x" is forbidden: exceeded quota: gpu',
}
MOUNT_EVENT = {
    "type": "Warning",
    "reason": "FailedMount",
    "message": 'persistentvolumeclaim "weights" not found',
    "involvedObject": {"kind": "Pod", "name": "demo-abc"},
}

# (case, observed, Degraded reason, words the message must contain, phase)
ROWS: list[tuple[str, Observed, str, list[str], str]] = [
    (
        "unschedulable",
        Observed(deployment(), [pod(conditions=[UNSCHEDULABLE])]),
        "Unschedulable",
        ["Insufficient nvidia.com/gpu", "1 nvidia.com/gpu", "spec.resources"],
        "Degraded",
    ),
    (
        "oom",
        Observed(deployment(), [pod(phase="Running", containers=[OOM])]),
        "OOMKilled",
        ["64Gi", "spec.resources.memory"],
        "Degraded",
    ),
    (
        "crash loop",
        Observed(deployment(), [pod(phase="Running", containers=[CRASH])]),
        "CrashLoopBackOff",
        ["exit code 1", "kubectl logs -n team demo-abc -c server --previous"],
        "Degraded",
    ),
    (
        "download fails",
        Observed(deployment(), [pod(init=[{**CRASH, "name": "fetch-model"}])]),
        "CrashLoopBackOff",
        ["model download", "spec.model.source"],
        "Degraded",
    ),
    (
        "image pull",
        Observed(
            deployment(),
            [pod(containers=[waiting("ImagePullBackOff", 'Back-off pulling image "img:1"')])],
        ),
        "ImagePullBackOff",
        ["img:1", "spec.image"],
        "Degraded",
    ),
    (
        "err image pull",
        Observed(deployment(), [pod(containers=[waiting("ErrImagePull", "not found")])]),
        "ImagePullBackOff",
        ["not found"],
        "Degraded",
    ),
    (
        "missing secret",
        Observed(
            deployment(),
            [pod(containers=[waiting("CreateContainerConfigError", 'secret "keys" not found')])],
        ),
        "CreateContainerConfigError",
        ['secret "keys" not found', "apiKeySecretRef"],
        "Degraded",
    ),
    (
        "deadline",
        Observed(deployment(conditions=[DEADLINE]), []),
        "ProgressDeadlineExceeded",
        ["timed out progressing", "startupTimeoutSeconds"],
        "Degraded",
    ),
    (
        "quota",
        Observed(deployment(conditions=[QUOTA]), []),
        "FailedCreate",
        ["exceeded quota"],
        "Degraded",
    ),
    (
        "mount",
        Observed(deployment(), [pod()], [MOUNT_EVENT]),
        "FailedMount",
        ['"weights" not found', "spec.cache.pvc"],
        "Degraded",
    ),
    (
        "refused",
        Observed(None, [], [], "the API server refused the Deployment: bad"),
        "InvalidSpec",
        ["refused the Deployment"],
        "Degraded",
    ),
    (
        "starting",
        Observed(
            deployment(),
            [
                pod(
                    phase="Running",
                    containers=[{"name": "server", "ready": False, "state": {"running": {}}}],
                )
            ],
        ),
        "AsExpected",
        ["no problem"],
        "Pending",
    ),
    ("ready", Observed(deployment(ready=1), [pod(phase="Running")]), "AsExpected", [], "Ready"),
    (
        "rolling",
        Observed(deployment(replicas=2, ready=1, updated=1), []),
        "AsExpected",
        [],
        "Progressing",
    ),
    ("scaled to zero", Observed(deployment(replicas=0), []), "AsExpected", [], "ScaledToZero"),
]


def _conditions(status: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in status["conditions"]}


@pytest.mark.parametrize(
    ("case", "observed", "reason", "words", "phase"), ROWS, ids=[r[0] for r in ROWS]
)
def test_status_tells_why(
    make_svc: Callable[..., LLMService],
    case: str,
    observed: Observed,
    reason: str,
    words: list[str],
    phase: str,
) -> None:
    status = derive_status(make_svc(), observed, [], NOW)
    degraded = _conditions(status)["Degraded"]
    assert degraded["reason"] == reason
    assert degraded["status"] == ("False" if reason == "AsExpected" else "True")
    for word in words:
        assert word in degraded["message"]
    assert status["phase"] == phase
    LLMServiceStatus.model_validate(status)  # fits the CRD's status schema


def test_ready_only_when_a_replica_serves(make_svc: Callable[..., LLMService]) -> None:
    loading = _conditions(derive_status(make_svc(), Observed(deployment()), [], NOW))
    assert loading["Ready"]["status"] == "False" and loading["Ready"]["reason"] == "Starting"
    serving = derive_status(make_svc(), Observed(deployment(replicas=2, ready=2)), [], NOW)
    ready = _conditions(serving)["Ready"]
    assert ready["status"] == "True" and "2/2 pods ready" in ready["message"]
    assert _conditions(serving)["Progressing"]["reason"] == "RolloutComplete"
    assert (serving["replicas"], serving["readyReplicas"]) == (2, 2)


def test_a_recovered_container_is_not_a_problem(make_svc: Callable[..., LLMService]) -> None:
    healthy = {**OOM, "ready": True, "state": {"running": {}}}
    status = derive_status(
        make_svc(),
        Observed(deployment(ready=1), [pod(phase="Running", containers=[healthy])]),
        [],
        NOW,
    )
    assert _conditions(status)["Degraded"]["status"] == "False"


def test_the_worst_problem_wins(make_svc: Callable[..., LLMService]) -> None:
    pods = [
        pod("demo-a", conditions=[UNSCHEDULABLE]),
        pod("demo-b", phase="Running", containers=[OOM]),
    ]
    status = derive_status(make_svc(), Observed(deployment(replicas=2), pods), [], NOW)
    assert _conditions(status)["Degraded"]["reason"] == "OOMKilled"


def test_terminating_pods_are_ignored(make_svc: Callable[..., LLMService]) -> None:
    leaving = pod(phase="Running", containers=[CRASH])
    leaving["metadata"]["deletionTimestamp"] = NOW
    status = derive_status(make_svc(), Observed(deployment(), [leaving]), [], NOW)
    assert _conditions(status)["Degraded"]["status"] == "False"


def test_the_status_names_url_selector_and_generation(make_svc: Callable[..., LLMService]) -> None:
    status = derive_status(make_svc(), Observed(deployment()), [], NOW)
    assert status["url"] == "http://demo.team.svc.cluster.local:8000/v1"
    assert status["selector"] == "app.kubernetes.io/instance=demo,app.kubernetes.io/name=llmservice"
    assert status["observedGeneration"] == 3
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])


def test_transition_times_move_only_on_a_change(make_svc: Callable[..., LLMService]) -> None:
    first = derive_status(make_svc(), Observed(deployment()), [], "2030-01-01T00:00:00Z")
    same = derive_status(
        make_svc(), Observed(deployment()), first["conditions"], "2030-01-01T00:05:00Z"
    )
    assert same == first, "nothing changed: the status (and so the patch) must be identical"
    ready = derive_status(
        make_svc(), Observed(deployment(ready=1)), first["conditions"], "2030-01-01T00:09:00Z"
    )
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times == {
        "Ready": "2030-01-01T00:09:00Z",
        "Progressing": "2030-01-01T00:09:00Z",
        "Degraded": "2030-01-01T00:00:00Z",
    }


def test_an_invalid_spec_is_degraded_not_retried() -> None:
    status = invalid_status("spec.replicas: must be >= 0", 7, [], NOW)
    assert status["phase"] == "Degraded" and status["observedGeneration"] == 7
    degraded = _conditions(status)["Degraded"]
    assert (degraded["reason"], degraded["message"]) == (
        "InvalidSpec",
        "spec.replicas: must be >= 0",
    )
