"""The LLMService's status as a pure function of what the operator observed.

`derive_status(svc, observed, previous, now)` returns the whole status object: replica counts
from the Deployment, conditions Ready / Progressing / Degraded (with the reason `diagnosis` found)
and a phase that summarises them. A condition keeps its lastTransitionTime while its status does
not change, so a status patch with nothing new is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmservice.operator.diagnosis import Problem, diagnose
from llmservice.operator.labels import selector_string
from llmservice.operator.resource import LLMService

Obj = dict[str, Any]


@dataclass(frozen=True)
class Observed:
    """What the operator read from the API server for one LLMService."""

    deployment: Obj | None
    """The owned Deployment (None before it exists)."""
    pods: Sequence[Obj] = ()
    """Its pods."""
    events: Sequence[Obj] = ()
    """Warning events about those pods."""
    apply_error: str | None = field(default=None)
    """The API server refused an owned object: the spec cannot work as written."""


@dataclass(frozen=True)
class _Rollout:
    desired: int
    replicas: int
    ready: int
    done: bool
    message: str


def _rollout(svc: LLMService, deployment: Obj | None) -> _Rollout:
    if deployment is None:
        desired = svc.spec.autoscaling.min_replicas if svc.autoscaled else svc.replicas
        return _Rollout(desired, 0, 0, False, "creating the Deployment")
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    replicas = int(status.get("replicas", 0))
    updated = int(status.get("updatedReplicas", 0))
    ready = int(status.get("readyReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    current = int(status.get("observedGeneration", 0)) >= int(
        deployment.get("metadata", {}).get("generation", 0)
    )
    # The `kubectl rollout status` test: every pod is of the new template and available.
    done = current and updated >= desired and replicas == updated and available >= updated
    message = f"{updated}/{desired} pods updated, {ready} ready"
    return _Rollout(desired, replicas, ready, done, message)


def _condition(kind: str, holds: bool, reason: str, message: str) -> Obj:
    return {
        "type": kind,
        "status": "True" if holds else "False",
        "reason": reason,
        "message": message,
    }


def _conditions(svc: LLMService, rollout: _Rollout, problem: Problem | None) -> list[Obj]:
    if rollout.desired == 0:
        ready = _condition("Ready", False, "ScaledToZero", "spec.replicas is 0: no pod serves")
    elif rollout.ready > 0:
        ready = _condition(
            "Ready", True, "Serving", f"{rollout.ready}/{rollout.desired} pods ready at {svc.url}"
        )
    elif problem is not None:
        ready = _condition("Ready", False, problem.reason, problem.message)
    else:
        ready = _condition(
            "Ready",
            False,
            "Starting",
            "no pod is ready yet: scheduling, image pull, model download and load can take up "
            f"to spec.startupTimeoutSeconds ({svc.spec.startup_timeout_seconds}s)",
        )
    if problem is not None and problem.reason == "ProgressDeadlineExceeded":
        progressing = _condition("Progressing", False, problem.reason, problem.message)
    elif rollout.done:
        progressing = _condition("Progressing", False, "RolloutComplete", rollout.message)
    else:
        progressing = _condition("Progressing", True, "RollingOut", rollout.message)
    if problem is not None:
        degraded = _condition("Degraded", True, problem.reason, problem.message)
    else:
        degraded = _condition("Degraded", False, "AsExpected", "no problem found")
    return [ready, progressing, degraded]


def _phase(conditions: list[Obj], desired: int) -> str:
    holds = {c["type"]: c["status"] == "True" for c in conditions}
    if holds["Degraded"]:
        return "Degraded"
    if desired == 0:
        return "ScaledToZero"
    if holds["Ready"]:
        return "Progressing" if holds["Progressing"] else "Ready"
    return "Pending"


def _stamp(
    conditions: list[Obj], previous: Sequence[Obj], now: str, generation: int | None
) -> None:
    before = {c.get("type"): c for c in previous}
    for condition in conditions:
        old = before.get(condition["type"])
        unchanged = old is not None and old.get("status") == condition["status"]
        condition["lastTransitionTime"] = (
            old.get("lastTransitionTime", now) if unchanged and old else now
        )
        if generation is not None:
            condition["observedGeneration"] = generation


def derive_status(
    svc: LLMService, observed: Observed, previous: Sequence[Obj], now: str
) -> dict[str, Any]:
    """The full status object to write (previous = the current status.conditions)."""
    rollout = _rollout(svc, observed.deployment)
    problem = diagnose(
        svc, observed.deployment, observed.pods, observed.events, observed.apply_error
    )
    conditions = _conditions(svc, rollout, problem)
    _stamp(conditions, previous, now, svc.generation)
    status: dict[str, Any] = {
        "phase": _phase(conditions, rollout.desired),
        "replicas": rollout.replicas,
        "readyReplicas": rollout.ready,
        "url": svc.url,
        "selector": selector_string(svc.name),
        "conditions": conditions,
    }
    if svc.generation is not None:
        status["observedGeneration"] = svc.generation
    return status


def invalid_status(
    message: str, generation: int | None, previous: Sequence[Obj], now: str
) -> dict[str, Any]:
    """The status of an LLMService whose spec cannot be parsed (nothing is applied)."""
    conditions = [
        _condition("Ready", False, "InvalidSpec", message),
        _condition(
            "Progressing", False, "InvalidSpec", "nothing is rolled out until the spec is fixed"
        ),
        _condition("Degraded", True, "InvalidSpec", message),
    ]
    _stamp(conditions, previous, now, generation)
    status: dict[str, Any] = {"phase": "Degraded", "conditions": conditions}
    if generation is not None:
        status["observedGeneration"] = generation
    return status
