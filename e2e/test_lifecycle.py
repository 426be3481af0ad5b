"""An LLMService's life: spec changes roll out, re-applies change nothing, drift is repaired,
the scale subresource works, the HPA owns the replicas of an autoscaled service, switched-off
features lose their objects, and deleting it deletes its children (garbage collector).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from cluster import Kubectl, wait_for
from support.llmservices import OWNED_KINDS, LLMServices, small_llmservice

# Watching for "nothing changes" needs a window; it is an observation, not a synchronisation.
QUIET_SECONDS = 8


def _server_args(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    deployment = kubectl.get("deployment", name, namespace)
    (server,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "server"
    ]
    return [*server.get("command", []), *server.get("args", [])]


def _last_handled_labels(llmservice: dict[str, Any]) -> dict[str, str]:
    """The labels of the LLMService as kopf last handled it (its diff-base annotation)."""
    annotations = llmservice["metadata"].get("annotations") or {}
    handled = annotations.get("llmservice.io/last-handled-configuration")
    return dict(json.loads(handled).get("metadata", {}).get("labels", {})) if handled else {}


def _touch_and_wait_reconciled(
    kubectl: Kubectl, llmservices: LLMServices, namespace: str, name: str
) -> None:
    """Makes kopf reconcile the unchanged spec once more and waits until it has."""
    kubectl.run(
        "label",
        "llms",
        name,
        "-n",
        namespace,
        "--overwrite",
        f"e2e.llmservice.io/touched={time.monotonic_ns()}",
    )
    touched = kubectl.get("llms", name, namespace)["metadata"]["labels"][
        "e2e.llmservice.io/touched"
    ]
    llmservices.wait(
        namespace,
        name,
        lambda obj: _last_handled_labels(obj).get("e2e.llmservice.io/touched") == touched,
        "the operator to reconcile the touched LLMService",
    )


@pytest.mark.slow
def test_spec_change_rolls_out_and_is_observed(
    namespace: str, kubectl: Kubectl, llmservices: LLMServices
) -> None:
    manifest = small_llmservice("rolling", namespace, engine={"maxNumSeqs": 64})
    llmservices.apply(manifest)
    first = llmservices.wait_ready(namespace, "rolling")
    assert first["status"]["observedGeneration"] == 1
    (old_pod,) = llmservices.pods(namespace, "rolling")

    manifest["spec"]["engine"]["maxNumSeqs"] = 128
    llmservices.apply(manifest)
    second = llmservices.wait_ready(namespace, "rolling")
    assert second["metadata"]["generation"] == 2
    assert second["status"]["observedGeneration"] == 2
    args = " ".join(_server_args(kubectl, namespace, "rolling"))
    assert "--max-num-seqs 128" in args or "--max-num-seqs=128" in args
    # A new pod of the new template replaced the old one.
    old_name = old_pod["metadata"]["name"]
    wait_for(
        lambda: (
            [p["metadata"]["name"] != old_name for p in llmservices.pods(namespace, "rolling")]
            == [True]
        ),
        timeout=60,
        what=f"{old_name} to be replaced by one new pod",
        explain=lambda: llmservices.explain(namespace),
    )


@pytest.mark.slow
def test_applying_the_same_manifest_again_changes_no_child(
    namespace: str, kubectl: Kubectl, llmservices: LLMServices
) -> None:
    manifest = small_llmservice("steady", namespace)
    llmservices.apply(manifest)
    llmservice = llmservices.wait_ready(namespace, "steady")
    before = llmservices.resource_versions(llmservice)
    assert set(before) >= {"Deployment/steady", "Service/steady", "PodDisruptionBudget/steady"}

    kubectl.apply(yaml.safe_dump(manifest))
    kubectl.run(
        "apply",
        "--server-side",
        "--field-manager=e2e-gitops",
        "-f",
        "-",
        stdin=yaml.safe_dump(manifest),
    )
    # A label change makes kopf run the reconcile handler once more on the unchanged spec: the
    # operator applies the very same objects again.
    _touch_and_wait_reconciled(kubectl, llmservices, namespace, "steady")
    deadline = time.monotonic() + QUIET_SECONDS
    while time.monotonic() < deadline:
        assert llmservices.resource_versions(llmservice) == before
        time.sleep(1)


@pytest.mark.slow
def test_manual_edits_of_owned_objects_are_reverted(
    namespace: str, kubectl: Kubectl, llmservices: LLMServices
) -> None:
    llmservices.apply(small_llmservice("guarded", namespace, shutdownTimeoutSeconds=30))
    llmservices.wait_ready(namespace, "guarded")
    patch = {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 1}}}}
    kubectl.run(
        "patch", "deployment", "guarded", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
    )
    wait_for(
        lambda: (
            kubectl.get("deployment", "guarded", namespace)["spec"]["template"]["spec"][
                "terminationGracePeriodSeconds"
            ]
            == 45
        ),
        timeout=60,
        what="the Deployment's terminationGracePeriodSeconds back to 45",
        explain=lambda: llmservices.explain(namespace),
    )
    kubectl.run("scale", "deployment", "guarded", "-n", namespace, "--replicas=3")
    wait_for(
        lambda: kubectl.get("deployment", "guarded", namespace)["spec"]["replicas"] == 1,
        timeout=60,
        what="the Deployment's replicas back to 1",
        explain=lambda: llmservices.explain(namespace),
    )
    uid = kubectl.get("service", "guarded", namespace)["metadata"]["uid"]
    kubectl.run("delete", "service", "guarded", "-n", namespace)
    wait_for(
        lambda: (
            (kubectl.get_or_none("service", "guarded", namespace) or {})
            .get("metadata", {})
            .get("uid")
            not in (None, uid)
        ),
        timeout=60,
        what="the deleted Service to be re-created",
        explain=lambda: llmservices.explain(namespace),
    )
    llmservices.wait_ready(namespace, "guarded")


@pytest.mark.slow
def test_scale_subresource_scales_the_deployment(
    namespace: str, kubectl: Kubectl, llmservices: LLMServices
) -> None:
    llmservices.apply(small_llmservice("scaled", namespace))
    llmservices.wait_ready(namespace, "scaled")
    kubectl.run("scale", "llms", "scaled", "-n", namespace, "--replicas=2")
    ready = llmservices.wait(
        namespace,
        "scaled",
        lambda obj: (
            obj["status"].get("readyReplicas") == 2 and obj["status"].get("phase") == "Ready"
        ),
        "2 ready replicas",
    )
    assert ready["spec"]["replicas"] == 2
    assert kubectl.get("deployment", "scaled", namespace)["spec"]["replicas"] == 2


@pytest.mark.slow
def test_deleting_the_llmservice_deletes_its_children(
    namespace: str, kubectl: Kubectl, llmservices: LLMServices
) -> None:
    llmservices.apply(small_llmservice("doomed", namespace))
    llmservice = llmservices.wait_ready(namespace, "doomed")
    assert llmservices.children(llmservice)
    kubectl.run("delete", "llms", "doomed", "-n", namespace, "--wait=false")
    selector = "app.kubernetes.io/instance=doomed"
    kinds = ",".join((*OWNED_KINDS, "replicasets.apps", "pods"))
    wait_for(
        lambda: not kubectl.items(kinds, namespace, selector),
        timeout=90,
        what="the garbage collector to delete doomed's children",
        explain=lambda: llmservices.explain(namespace),
    )
    assert kubectl.get_or_none("llms", "doomed", namespace) is None


@pytest.mark.slow
def test_autoscaled_replicas_are_left_to_the_hpa(
    namespace: str, kubectl: Kubectl, llmservices: LLMServices
) -> None:
    autoscaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 3}
    llmservices.apply(small_llmservice("elastic", namespace, autoscaling=autoscaling))
    llmservices.wait_ready(namespace, "elastic")
    # What the HorizontalPodAutoscaler does when it scales: the Deployment's scale subresource.
    kubectl.run("scale", "deployment", "elastic", "-n", namespace, "--replicas=2")
    _touch_and_wait_reconciled(kubectl, llmservices, namespace, "elastic")
    deadline = time.monotonic() + QUIET_SECONDS
    while time.monotonic() < deadline:
        assert kubectl.get("deployment", "elastic", namespace)["spec"]["replicas"] == 2
        time.sleep(1)
    ready = llmservices.wait(
        namespace,
        "elastic",
        lambda obj: obj["status"].get("readyReplicas") == 2,
        "2 ready replicas",
    )
    assert ready["status"]["replicas"] == 2


@pytest.mark.slow
def test_switching_features_off_deletes_their_objects(
    namespace: str, kubectl: Kubectl, llmservices: LLMServices
) -> None:
    manifest = small_llmservice(
        "modest", namespace, autoscaling={"enabled": True, "maxReplicas": 2}
    )
    llmservice = llmservices.apply(manifest)
    llmservices.wait_ready(namespace, "modest")
    assert {"HorizontalPodAutoscaler", "NetworkPolicy"} <= set(llmservices.children(llmservice))

    manifest["spec"]["autoscaling"] = {"enabled": False}
    manifest["spec"]["networkPolicy"] = {"enabled": False}
    manifest["spec"]["replicas"] = 2
    llmservices.apply(manifest)
    wait_for(
        lambda: (
            set(llmservices.children(llmservice))
            == {"Deployment", "Service", "PodDisruptionBudget"}
        ),
        timeout=60,
        what="the HorizontalPodAutoscaler and the NetworkPolicy to be deleted",
        explain=lambda: llmservices.explain(namespace),
    )
    ready = llmservices.wait(
        namespace, "modest", lambda obj: obj["status"].get("readyReplicas") == 2, "2 ready replicas"
    )
    assert ready["status"]["observedGeneration"] == 2
    assert kubectl.get("deployment", "modest", namespace)["spec"]["replicas"] == 2
