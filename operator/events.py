"""Kubernetes Events on an LLMService when its conditions change (`kubectl describe` shows them).

`condition_events(previous, current)` is pure: the events a status transition deserves.
Degraded turning True (or changing its reason) is a Warning with the diagnosis; recovering and
becoming Ready are Normal. The first status of a new object says nothing unless it is already
Ready or Degraded, so a healthy start-up is quiet until it serves. `event_manifest` builds the
core/v1 Event the reconciler posts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmservice.operator.crd import API_VERSION, KIND

Obj = dict[str, Any]
COMPONENT = "llmservice-operator"


@dataclass(frozen=True)
class EventNote:
    """One event to post."""

    type: str
    """"Normal" or "Warning"."""
    reason: str
    """CamelCase, as Kubernetes reasons are."""
    message: str
    """What happened, for a person."""


def condition_events(previous: Sequence[Obj], current: Sequence[Obj]) -> list[EventNote]:
    """The events of the step from `previous` to `current` conditions."""
    before = {c.get("type"): c for c in previous}
    now = {c.get("type"): c for c in current}
    notes: list[EventNote] = []
    degraded, was_degraded = now.get("Degraded"), before.get("Degraded")
    if degraded is not None and _changed(was_degraded, degraded):
        if degraded.get("status") == "True":
            notes.append(EventNote("Warning", degraded["reason"], degraded["message"]))
        elif was_degraded is not None and was_degraded.get("status") == "True":
            notes.append(EventNote("Normal", "Recovered", f"no longer {was_degraded['reason']}"))
    ready, was_ready = now.get("Ready"), before.get("Ready")
    if ready is not None and _changed(was_ready, ready):
        if ready.get("status") == "True":
            notes.append(EventNote("Normal", "Ready", ready["message"]))
        elif was_ready is not None and was_ready.get("status") == "True":
            notes.append(EventNote("Warning", "NotReady", ready["message"]))
    return notes


def _changed(old: Obj | None, new: Obj) -> bool:
    if old is None:
        return True
    return (old.get("status"), old.get("reason")) != (new.get("status"), new.get("reason"))


def event_manifest(owner: Obj, note: EventNote, now: str) -> Obj:
    """A core/v1 Event about `owner` (an LLMService body), stamped `now` (RFC 3339)."""
    meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": owner.get("apiVersion", API_VERSION),
            "kind": owner.get("kind", KIND),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": note.type,
        "reason": note.reason,
        # The API server limits an event message to 1 KiB.
        "message": note.message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
