"""The reconciler against an in-memory API server: what gets applied, deleted and reported."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from llmservice.operator.builders.deployment import build_deployment
from llmservice.operator.kube import ApiError
from llmservice.operator.reconcile import Reconciler, RetryLater
from llmservice.operator.resource import parse_llmservice
from llmservice.operator.settings import Settings

Obj = dict[str, Any]
SETTINGS = Settings(default_image="runtime:1")


class FakeApi:
    """Stores applied objects; records every write so tests can assert what happened."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.writes: list[tuple[str, ...]] = []
        self.fail_apply: dict[str, ApiError] = {}
        self.events: list[Obj] = []
        self.fail_create: ApiError | None = None

    async def apply(self, manifest: Obj, plural: str, field_manager: str) -> Obj:
        if manifest["kind"] in self.fail_apply:
            raise self.fail_apply[manifest["kind"]]
        meta = manifest["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        self.writes.append(("apply", plural, field_manager))
        stored = copy.deepcopy(self.objects.get(key, {}))
        stored.update({k: copy.deepcopy(v) for k, v in manifest.items() if k != "metadata"})
        stored.setdefault("metadata", {}).update(copy.deepcopy(meta))
        fields = {"f:spec": {"f:replicas": {}}} if "replicas" in manifest.get("spec", {}) else {}
        stored["metadata"]["managedFields"] = [
            {"manager": field_manager, "operation": "Apply", "fieldsV1": fields}
        ]
        self.objects[key] = stored
        return stored

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.objects.get((plural, namespace, name)))

    async def list(self, api_version: str, plural: str, namespace: str, **_: Any) -> list[Obj]:
        return [
            copy.deepcopy(o)
            for (p, ns, _n), o in self.objects.items()
            if (p, ns) == (plural, namespace)
        ]

    async def delete(self, api_version: str, plural: str, namespace: str, name: str) -> None:
        self.writes.append(("delete", plural, name))
        self.objects.pop((plural, namespace, name), None)

    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, status: Obj
    ) -> Obj:
        self.writes.append(("status", plural, name))
        self.objects[(plural, namespace, name)]["status"] = copy.deepcopy(status)
        return self.objects[(plural, namespace, name)]

    async def create(self, manifest: Obj, plural: str) -> Obj:
        if self.fail_create is not None:
            raise self.fail_create
        self.writes.append(("create", plural, manifest["reason"]))
        self.events.append(copy.deepcopy(manifest))
        return manifest


def _cr(api: FakeApi, body: Obj) -> Obj:
    key = ("llmservices", body["metadata"]["namespace"], body["metadata"]["name"])
    api.objects.setdefault(key, copy.deepcopy(body))
    return api.objects[key]


def _run(api: FakeApi, body: Obj) -> None:
    asyncio.run(
        Reconciler(api, SETTINGS, now=lambda: "2030-01-01T00:00:00Z").reconcile(copy.deepcopy(body))
    )


def test_reconcile_creates_the_objects_and_reports_status(body: Obj) -> None:
    api = FakeApi()
    body["spec"]["autoscaling"] = {"enabled": True}
    _run(api, _cr(api, body))
    kinds = sorted(plural for plural, _, _ in api.objects if plural != "llmservices")
    assert kinds == [
        "deployments",
        "horizontalpodautoscalers",
        "networkpolicies",
        "poddisruptionbudgets",
        "services",
    ]
    assert all(w[2] == "llmservice-operator" for w in api.writes if w[0] == "apply")
    status = api.objects["llmservices", "team", "demo"]["status"]
    assert status["phase"] == "Pending" and status["observedGeneration"] == 3


def test_reconciling_twice_writes_no_new_status(body: Obj) -> None:
    api = FakeApi()
    _run(api, _cr(api, body))
    before = copy.deepcopy(api.objects)
    api.writes.clear()
    _run(api, api.objects["llmservices", "team", "demo"])
    assert api.objects == before
    assert [w for w in api.writes if w[0] != "apply"] == []


def test_switching_a_feature_off_deletes_only_our_object(body: Obj) -> None:
    api = FakeApi()
    _run(api, _cr(api, body))
    assert ("networkpolicies", "team", "demo") in api.objects
    body["spec"]["networkPolicy"] = {"enabled": False}
    api.objects["llmservices", "team", "demo"]["spec"] = copy.deepcopy(body["spec"])
    api.objects["horizontalpodautoscalers", "team", "demo"] = {
        "metadata": {"name": "demo"}
    }  # not ours
    _run(api, api.objects["llmservices", "team", "demo"])
    assert ("networkpolicies", "team", "demo") not in api.objects
    assert ("horizontalpodautoscalers", "team", "demo") in api.objects


def test_enabling_autoscaling_hands_the_replica_count_over_first(body: Obj) -> None:
    api = FakeApi()
    body["spec"]["replicas"] = 3
    _run(api, _cr(api, body))
    api.writes.clear()
    spec = api.objects["llmservices", "team", "demo"]["spec"]
    del spec["replicas"]
    spec["autoscaling"] = {"enabled": True}
    _run(api, api.objects["llmservices", "team", "demo"])
    applies = [w for w in api.writes if w[0] == "apply" and w[1] == "deployments"]
    assert applies == [
        ("apply", "deployments", "llmservice-operator-handover"),
        ("apply", "deployments", "llmservice-operator"),
    ]


def test_an_invalid_spec_is_reported_not_applied(body: Obj) -> None:
    api = FakeApi()
    body["spec"]["replicas"] = -1
    _run(api, _cr(api, body))
    assert [w[0] for w in api.writes] == ["status", "create"]  # the status, then its event
    status = api.objects["llmservices", "team", "demo"]["status"]
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["reason"] == "InvalidSpec" and "spec.replicas" in degraded["message"]
    (event,) = api.events
    assert (event["type"], event["reason"]) == ("Warning", "InvalidSpec")
    assert event["involvedObject"]["name"] == "demo" and "spec.replicas" in event["message"]
    _run(api, api.objects["llmservices", "team", "demo"])
    assert len(api.events) == 1  # nothing changed: no second event


def test_an_event_the_api_server_refuses_does_not_fail_the_reconcile(body: Obj) -> None:
    api = FakeApi()
    api.fail_create = ApiError(403, "Forbidden", "events is forbidden")
    body["spec"]["replicas"] = -1
    _run(api, _cr(api, body))
    assert api.objects["llmservices", "team", "demo"]["status"]["phase"] == "Degraded"


def test_a_refused_object_degrades_instead_of_retrying(body: Obj) -> None:
    api = FakeApi()
    api.fail_apply["Deployment"] = ApiError(422, "Invalid", "spec.template: bad toleration")
    _run(api, _cr(api, body))
    status = api.objects["llmservices", "team", "demo"]["status"]
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["reason"] == "InvalidSpec" and "bad toleration" in degraded["message"]


@pytest.mark.parametrize(("code", "words"), [(503, "API error"), (403, "RBAC"), (409, "API error")])
def test_transient_failures_are_retried(body: Obj, code: int, words: str) -> None:
    api = FakeApi()
    api.fail_apply["Service"] = ApiError(code, "Err", "boom")
    with pytest.raises(RetryLater, match=words):
        _run(api, _cr(api, body))


def test_drift_of_an_owned_object_is_repaired(body: Obj) -> None:
    api = FakeApi()
    _run(api, _cr(api, body))
    reconciler = Reconciler(api, SETTINGS)
    deployment = api.objects["deployments", "team", "demo"]
    api.writes.clear()
    asyncio.run(reconciler.on_owned_event(copy.deepcopy(deployment), deleted=False))
    assert [w for w in api.writes if w[0] == "apply"] == [], "no drift: no apply"
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "someone-else:9"
    asyncio.run(reconciler.on_owned_event(copy.deepcopy(deployment), deleted=False))
    svc = parse_llmservice(api.objects["llmservices", "team", "demo"])
    assert (
        api.objects["deployments", "team", "demo"]["spec"]
        == build_deployment(svc, SETTINGS)["spec"]
    )


def test_a_deleted_owned_object_is_recreated(body: Obj) -> None:
    api = FakeApi()
    _run(api, _cr(api, body))
    service = api.objects.pop(("services", "team", "demo"))
    asyncio.run(Reconciler(api, SETTINGS).on_owned_event(service, deleted=True))
    assert ("services", "team", "demo") in api.objects
