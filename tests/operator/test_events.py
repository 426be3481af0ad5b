"""Events on condition transitions: which transitions speak, and the Event objects posted."""

from __future__ import annotations

from typing import Any

from llmservice.operator.events import EventNote, condition_events, event_manifest

Obj = dict[str, Any]


def _conditions(ready: str, ready_reason: str, degraded: str, degraded_reason: str) -> list[Obj]:
    return [
        {"type": "Ready", "status": ready, "reason": ready_reason, "message": f"{ready_reason}!"},
        {"type": "Progressing", "status": "True", "reason": "RollingOut", "message": "0/1"},
        {
            "type": "Degraded",
            "status": degraded,
            "reason": degraded_reason,
            "message": f"{degraded_reason}!",
        },
    ]


STARTING = _conditions("False", "Starting", "False", "AsExpected")
UNSCHEDULABLE = _conditions("False", "Unschedulable", "True", "Unschedulable")
CRASHING = _conditions("False", "CrashLoopBackOff", "True", "CrashLoopBackOff")
SERVING = _conditions("True", "Serving", "False", "AsExpected")


def test_a_quiet_start_posts_nothing_until_it_serves() -> None:
    assert condition_events([], STARTING) == []
    assert condition_events(STARTING, STARTING) == []
    assert condition_events(STARTING, SERVING) == [EventNote("Normal", "Ready", "Serving!")]
    assert condition_events([], SERVING) == [EventNote("Normal", "Ready", "Serving!")]


def test_degraded_warns_once_per_reason_then_recovers() -> None:
    assert condition_events(STARTING, UNSCHEDULABLE) == [
        EventNote("Warning", "Unschedulable", "Unschedulable!")
    ]
    assert condition_events(UNSCHEDULABLE, UNSCHEDULABLE) == []  # a status refresh: no repeat
    assert condition_events(UNSCHEDULABLE, CRASHING) == [
        EventNote("Warning", "CrashLoopBackOff", "CrashLoopBackOff!")
    ]
    assert condition_events(CRASHING, SERVING) == [
        EventNote("Normal", "Recovered", "no longer CrashLoopBackOff"),
        EventNote("Normal", "Ready", "Serving!"),
    ]


def test_losing_readiness_warns() -> None:
    assert condition_events(SERVING, CRASHING) == [
        EventNote("Warning", "CrashLoopBackOff", "CrashLoopBackOff!"),
        EventNote("Warning", "NotReady", "CrashLoopBackOff!"),
    ]


def test_the_event_object_points_at_the_llmservice() -> None:
    owner = {
        "apiVersion": "llmservice.io/v1alpha1",
        "kind": "LLMService",
        "metadata": {"name": "demo", "namespace": "team", "uid": "u-1", "resourceVersion": "7"},
    }
    event = event_manifest(
        owner, EventNote("Warning", "Unschedulable", "x" * 5000), "2030-01-01T00:00:00Z"
    )
    assert event["metadata"] == {"generateName": "demo.", "namespace": "team"}
    assert event["involvedObject"] == {
        "apiVersion": "llmservice.io/v1alpha1",
        "kind": "LLMService",
        "name": "demo",
        "namespace": "team",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    assert (event["type"], event["reason"], len(event["message"])) == (
        "Warning",
        "Unschedulable",
        1024,
    )
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2030-01-01T00:00:00Z"
