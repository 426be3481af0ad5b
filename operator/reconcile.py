"""Reconciliation: make the owned objects match the LLMService, then report what is true.

This is the I/O edge around the pure parts: `build_all` says what should exist, the client
applies it (server-side apply, one field manager, so applying twice changes nothing), objects
switched off are deleted, and `derive_status` turns the observed Deployment, pods and events
into the status; a status whose conditions changed also gets its Events (events.py). Errors
split in two: a spec the API server refuses (4xx) is reported as
Degraded/InvalidSpec and not retried until the spec changes; anything transient raises
`RetryLater`, which the kopf handlers turn into a delayed retry.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections import defaultdict
from typing import Any, Protocol

from llmservice.operator.builders import OWNED_KINDS, build_all, unwanted_kinds
from llmservice.operator.crd import API_VERSION, PLURAL
from llmservice.operator.drift import drifted, owns_field
from llmservice.operator.events import condition_events, event_manifest
from llmservice.operator.kube import ApiError
from llmservice.operator.labels import owner_name, selector_string
from llmservice.operator.resource import InvalidLLMService, LLMService, parse_llmservice
from llmservice.operator.settings import Settings
from llmservice.operator.status import Observed, derive_status, invalid_status

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
_PLURAL_OF_KIND = {kind: plural for _, kind, plural in OWNED_KINDS}
# Refusals that mean "this spec cannot work" rather than "try again later".
_SPEC_ERRORS = frozenset({400, 404, 422})


class KubeApi(Protocol):
    """The part of `kube.KubeClient` the reconciler uses (tests pass an in-memory fake)."""

    async def apply(self, manifest: Obj, plural: str, field_manager: str) -> Obj: ...
    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> Obj | None: ...
    async def list(
        self,
        api_version: str,
        plural: str,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]: ...
    async def delete(self, api_version: str, plural: str, namespace: str, name: str) -> None: ...
    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, status: Obj
    ) -> Obj: ...
    async def create(self, manifest: Obj, plural: str) -> Obj: ...


class RetryLater(Exception):
    """A transient failure (API unavailable, conflict, missing permission): try again."""

    def __init__(self, message: str, delay: float = 15.0) -> None:
        super().__init__(message)
        self.delay = delay


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    """Reconciles LLMServices; one at a time per LLMService, any number in parallel."""

    def __init__(self, client: KubeApi, settings: Settings, now: Any = utc_now) -> None:
        self._client = client
        self._settings = settings
        self._now = now
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    async def reconcile(self, body: Obj) -> None:
        """Apply the owned objects of an LLMService body and write its status."""
        meta = body["metadata"]
        async with self._locks[meta["namespace"], meta["name"]]:
            try:
                svc = parse_llmservice(body)
            except InvalidLLMService as error:
                status = invalid_status(
                    str(error), meta.get("generation"), _conditions(body), self._now()
                )
                await self._write_status(body, status)
                return
            apply_error = await self._apply(svc)
            await self._refresh(svc, body, apply_error)

    async def reconcile_named(self, namespace: str, name: str) -> None:
        body = await self._get_llmservice(namespace, name)
        if body is not None:
            await self.reconcile(body)

    async def on_owned_event(self, body: Obj, deleted: bool) -> None:
        """An owned object changed or vanished: repair drift, or just refresh the status."""
        owner = owner_name(body)
        namespace = body.get("metadata", {}).get("namespace")
        if owner is None or namespace is None:
            return
        cr = await self._get_llmservice(namespace, owner)
        if cr is None:
            return  # the LLMService is gone; garbage collection removes the rest
        try:
            svc = parse_llmservice(cr)
        except InvalidLLMService:
            return  # its status already says why; nothing to repair
        desired = {m["kind"]: m for m in build_all(svc, self._settings)}.get(body.get("kind", ""))
        if deleted or desired is None or drifted(desired, body):
            await self.reconcile(cr)
        elif body.get("kind") == "Deployment":
            await self.refresh_status(namespace, owner)

    async def refresh_status(self, namespace: str, name: str) -> None:
        """Recompute the status only (a pod changed)."""
        body = await self._get_llmservice(namespace, name)
        if body is None:
            return
        async with self._locks[namespace, name]:
            try:
                svc = parse_llmservice(body)
            except InvalidLLMService:
                return
            await self._refresh(svc, body, None)

    async def _get_llmservice(self, namespace: str, name: str) -> Obj | None:
        body: Obj | None = await self._call(self._client.get(API_VERSION, PLURAL, namespace, name))
        return body

    async def _apply(self, svc: LLMService) -> str | None:
        """Apply the desired objects; return the API server's refusal, if any."""
        manager = self._settings.field_manager
        if svc.autoscaled:
            await self._hand_replicas_to_hpa(svc)
        for manifest in build_all(svc, self._settings):
            try:
                await self._client.apply(manifest, _PLURAL_OF_KIND[manifest["kind"]], manager)
            except ApiError as error:
                if error.status in _SPEC_ERRORS:
                    return f"the API server refused the {manifest['kind']}: {error.message}"
                raise _retry(error) from error
        for api_version, _kind, plural in unwanted_kinds(svc, self._settings):
            existing = await self._call(
                self._client.get(api_version, plural, svc.namespace, svc.name)
            )
            if existing is not None and _controlled_by(existing, svc):
                await self._call(self._client.delete(api_version, plural, svc.namespace, svc.name))
        return None

    async def _hand_replicas_to_hpa(self, svc: LLMService) -> None:
        """Leave spec.replicas to the HPA without it snapping back to 1.

        If the operator's applies owned the Deployment's replicas, merely omitting the field
        would delete it (and the Deployment would scale to 1). A second manager first applies
        the current count, so the field survives when the operator lets go of it.
        """
        existing = await self._call(
            self._client.get("apps/v1", "deployments", svc.namespace, svc.name)
        )
        manager = self._settings.field_manager
        if existing is None or not owns_field(existing, manager, "spec", "replicas"):
            return
        current = existing.get("spec", {}).get("replicas", 1)
        handover = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": svc.name, "namespace": svc.namespace},
            "spec": {"replicas": current},
        }
        await self._call(self._client.apply(handover, "deployments", f"{manager}-handover"))

    async def _refresh(self, svc: LLMService, body: Obj, apply_error: str | None) -> None:
        deployment = await self._call(
            self._client.get("apps/v1", "deployments", svc.namespace, svc.name)
        )
        pods = await self._call(
            self._client.list("v1", "pods", svc.namespace, label_selector=selector_string(svc.name))
        )
        names = {p.get("metadata", {}).get("name") for p in pods}
        events = await self._call(
            self._client.list(
                "v1", "events", svc.namespace, field_selector="involvedObject.kind=Pod,type=Warning"
            )
        )
        mine = [e for e in events if (e.get("involvedObject") or {}).get("name") in names]
        observed = Observed(deployment, pods, mine, apply_error)
        await self._write_status(body, derive_status(svc, observed, _conditions(body), self._now()))

    async def _write_status(self, body: Obj, status: Obj) -> None:
        current = body.get("status") or {}
        if all(current.get(key) == value for key, value in status.items()):
            return  # nothing new: no write, no event, no loop
        meta = body["metadata"]
        await self._call(
            self._client.patch_status(API_VERSION, PLURAL, meta["namespace"], meta["name"], status)
        )
        now = self._now()
        for note in condition_events(current.get("conditions") or [], status["conditions"]):
            try:
                await self._client.create(event_manifest(body, note, now), "events")
            except ApiError as error:  # an event is worth a log line, not a retry
                logger.warning(
                    "could not post the %s event of %s: %s", note.reason, meta["name"], error
                )

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except ApiError as error:
            raise _retry(error) from error


def _conditions(body: Obj) -> list[Obj]:
    return list((body.get("status") or {}).get("conditions") or [])


def _controlled_by(obj: Obj, svc: LLMService) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == svc.uid and ref.get("controller") for ref in refs)


def _retry(error: ApiError) -> RetryLater:
    hint = " (the operator's RBAC lacks a permission)" if error.status == 403 else ""
    return RetryLater(
        f"Kubernetes API error{hint}: {error}", delay=60.0 if error.status == 403 else 15.0
    )
