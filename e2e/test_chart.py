"""The Helm chart: it installs the generated CRD and RBAC rules that are enough and no more.

"Enough" is proven by the whole e2e run: the operator runs with the chart's ServiceAccount token
and the `operator` fixture fails the session if the API server refused it anything. "No more"
is checked here, verb by verb, with `kubectl auth can-i` under that same token, for the
cluster-wide release and for a second release confined to a list of namespaces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import ControlPlane, Kubectl
from cluster.kubeconfig import write_kubeconfig
from support.chart import CHART
from support.llmservices import REPO
from support.operator_process import OperatorProcess

CRD = "llmservices.llmservice.io"


def test_chart_installs_the_generated_crd(kubectl: Kubectl, chart: dict[str, Any]) -> None:
    crd = kubectl.get("crd", CRD)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    assert crd["spec"]["names"]["shortNames"] == ["llms"]
    (version,) = crd["spec"]["versions"]
    assert set(version["subresources"]) == {"status", "scale"}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert {"Model", "Ready", "Phase", "Age"} <= set(columns)
    # The API server keeps the generated schema as it is: it silently drops what it does not
    # support, so any difference is a validation rule that never runs.
    generated = yaml.safe_load((REPO / "crds" / "llmservice.yaml").read_text())
    dropped = list(_differences(generated["spec"]["versions"][0]["schema"], version["schema"]))
    assert not dropped, "the API server changed the generated CRD schema:\n" + "\n".join(dropped)


def _differences(generated: Any, live: Any, path: str = "") -> Iterator[str]:
    if isinstance(generated, dict) and isinstance(live, dict):
        for key in generated.keys() | live.keys():
            if key not in live:
                yield f"{path}/{key}: dropped"
            elif key not in generated:
                yield f"{path}/{key}: added"
            else:
                yield from _differences(generated[key], live[key], f"{path}/{key}")
    elif generated != live:
        yield f"{path}: {generated!r} became {live!r}"


def test_chart_passes_helm_lint(kubectl: Kubectl) -> None:
    out = kubectl.helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out


def test_operator_runs_as_the_charts_service_account(operator: OperatorProcess) -> None:
    whoami = json.loads(operator.kubectl.run("auth", "whoami", "-o", "json").stdout)
    username = whoami["status"]["userInfo"]["username"]
    assert username == f"system:serviceaccount:{operator.namespace}:{operator.service_account}"


# (verb, resource, subresource) the operator needs, anywhere in the cluster.
NEEDED = [
    ("watch", "llmservices.llmservice.io", ""),
    ("patch", "llmservices.llmservice.io", ""),
    ("patch", "llmservices.llmservice.io", "status"),
    ("patch", "deployments.apps", ""),
    ("watch", "deployments.apps", ""),
    ("patch", "services", ""),
    ("patch", "poddisruptionbudgets.policy", ""),
    ("delete", "networkpolicies.networking.k8s.io", ""),
    ("delete", "horizontalpodautoscalers.autoscaling", ""),
    ("watch", "pods", ""),
    ("list", "events", ""),
]
# What it must not be able to do: read credentials, run or delete workloads directly, touch
# nodes, grant itself rights, act as someone else, or delete what users own.
FORBIDDEN = [
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("create", "pods", ""),
    ("delete", "pods", ""),
    ("create", "pods", "exec"),
    ("delete", "deployments.apps", ""),
    ("delete", "services", ""),
    ("patch", "nodes", ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
    ("create", "roles.rbac.authorization.k8s.io", ""),
    ("impersonate", "users", ""),
    ("create", "serviceaccounts", "token"),
    ("patch", "configmaps", ""),
    ("create", "llmservices.llmservice.io", ""),
    ("delete", "llmservices.llmservice.io", ""),
    ("update", "customresourcedefinitions.apiextensions.k8s.io", ""),
]


def _can(operator: OperatorProcess, verb: str, resource: str, subresource: str) -> bool:
    args = ["auth", "can-i", verb, resource, "--all-namespaces"]
    if subresource:
        args.append(f"--subresource={subresource}")
    answer = operator.kubectl.run(*args, check=False).stdout.strip()
    if answer not in ("yes", "no"):
        raise AssertionError(f"kubectl auth can-i {verb} {resource}: {answer!r}")
    return answer == "yes"


@pytest.mark.parametrize(("verb", "resource", "subresource"), NEEDED)
def test_operator_may_do_what_it_needs(
    operator: OperatorProcess, verb: str, resource: str, subresource: str
) -> None:
    assert _can(operator, verb, resource, subresource)


@pytest.mark.parametrize(("verb", "resource", "subresource"), FORBIDDEN)
def test_operator_may_not_do_more(
    operator: OperatorProcess, verb: str, resource: str, subresource: str
) -> None:
    assert not _can(operator, verb, resource, subresource)


def test_namespaced_release_is_confined_to_its_namespaces(
    kubectl: Kubectl, control_plane: ControlPlane, chart: dict[str, Any], tmp_path: Path
) -> None:
    """watchNamespaces turns the cluster-wide rules into Roles in those namespaces only."""
    release, home, served, other = "llmservice-team", "team-operator", "team-a", "team-b"
    for namespace in (served, other):
        kubectl.run("create", "namespace", namespace)
    kubectl.helm(
        *("install", release, str(CHART), "--namespace", home, "--create-namespace"),
        *("--set", "crds.install=false", "--set", f"watchNamespaces={{{served}}}"),
        *("--set", "replicaCount=0", "--wait", "--timeout", "2m"),
    )
    try:
        (deployment,) = kubectl.items("deployments", home, f"app.kubernetes.io/instance={release}")
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        token = kubectl.run("create", "token", account, "-n", home).stdout.strip()
        config = write_kubeconfig(
            tmp_path / "team", control_plane.server, control_plane.pki.cert("ca"), token=token
        )
        team = Kubectl(control_plane.bin_dir, config)

        def can(verb: str, resource: str, *scope: str) -> bool:
            answer = team.run("auth", "can-i", verb, resource, *scope, check=False).stdout
            return answer.strip() == "yes"

        assert can("patch", "deployments.apps", "-n", served)
        assert can("watch", "llmservices.llmservice.io", "-n", served)
        assert not can("patch", "deployments.apps", "-n", other)
        assert not can("watch", "llmservices.llmservice.io", "-n", other)
        assert not can("watch", "llmservices.llmservice.io", "--all-namespaces")
        # kopf still needs to notice CRDs, cluster-wide and read-only.
        assert can("watch", "customresourcedefinitions.apiextensions.k8s.io")
        assert not can("update", "customresourcedefinitions.apiextensions.k8s.io")
    finally:
        kubectl.helm("uninstall", release, "--namespace", home, "--wait")
        for namespace in (served, other, home):
            kubectl.run("delete", "namespace", namespace, "--wait=false")
