"""kopf handlers: thin, named `<kind>_<event>`, each delegating to the Reconciler.

Importing this module registers the handlers with kopf's default registry; `llmservice
operator` (cli.py) imports it and runs kopf. What the operator watches:
- LLMServices: create / update / resume -> full reconcile (deletion is left to owner references:
  no finalizer, so deleting an LLMService never waits for the operator);
- the objects it owns (by the managed-by label, filtered by the API server): a change away from
  the desired state or a deletion -> reconcile again (drift repair); Deployment changes -> status;
- the pods of LLMServices -> status (scheduling, crashes, readiness).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from llmservice.operator.builders import OWNED_KINDS
from llmservice.operator.crd import GROUP, PLURAL, VERSION
from llmservice.operator.kube import KubeClient
from llmservice.operator.labels import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, OWNED_SELECTOR
from llmservice.operator.reconcile import Reconciler, RetryLater
from llmservice.operator.settings import Settings

OWNED = {MANAGED_BY_LABEL: MANAGED_BY}


def _login() -> kopf.ConnectionInfo | None:
    settings = kopf.OperatorSettings()
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )


@kopf.on.login()
def operator_login(**_: Any) -> kopf.ConnectionInfo | None:
    return _login()


@kopf.on.startup()
async def operator_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Progress and the last handled spec live in annotations: the status is ours alone and its
    # structural schema would prune kopf's fields anyway.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # The API server filters the watch streams: the operator never sees unrelated pods.
    for api_version, _kind, plural in OWNED_KINDS:
        group = api_version.rpartition("/")[0]
        settings.watching.label_selectors[group, plural] = OWNED_SELECTOR
    settings.watching.label_selectors["", "pods"] = OWNED_SELECTOR
    memo.client = KubeClient(_login)
    memo.reconciler = Reconciler(memo.client, Settings.from_env())


@kopf.on.cleanup()
async def operator_cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.client.close()


async def _delegate(work: Any) -> None:
    try:
        await work
    except RetryLater as error:
        raise kopf.TemporaryError(str(error), delay=error.delay) from error


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def llmservice_reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _delegate(memo.reconciler.reconcile(dict(body)))


def _owned_event(group: str, version: str, plural: str) -> None:
    @kopf.on.event(group, version, plural, labels=OWNED, id=f"{plural}_event")
    async def owned_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        if event["type"] is None:  # the initial listing: resume handles those
            return
        deleted = event["type"] == "DELETED"
        await _delegate(memo.reconciler.on_owned_event(dict(event["object"]), deleted))


for _api_version, _kind, _plural in OWNED_KINDS:
    _group, _, _version = _api_version.rpartition("/")
    _owned_event(_group, _version, _plural)


@kopf.on.event("", "v1", "pods", labels=OWNED)
async def pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    instance = body.get("metadata", {}).get("labels", {}).get(INSTANCE_LABEL)
    if instance and body.metadata.namespace:
        await _delegate(memo.reconciler.refresh_status(body.metadata.namespace, instance))
