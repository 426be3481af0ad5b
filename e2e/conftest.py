"""Session fixtures of the e2e tests: one local control plane for the whole run.

The control plane (e2e/cluster) is started once per session and torn down at the end, leaving
no process or file behind; the components' and the operator's logs are first copied to
build/e2e-logs/ (the path is printed when a test failed).
"""

from __future__ import annotations

import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

E2E = Path(__file__).resolve().parent
REPO = E2E.parent
# The harness is imported as the top-level package `cluster` (pytest's importlib mode keeps the
# repository root, whose operator/ folder would shadow the standard library, off sys.path).
sys.path.insert(0, str(E2E))

from cluster import ControlPlane, Kubectl, ensure_binaries  # noqa: E402
from support.chart import install_chart  # noqa: E402
from support.llmservices import LLMServices  # noqa: E402
from support.operator_process import OperatorProcess  # noqa: E402

LOG_ARCHIVE = REPO / "build" / "e2e-logs"


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    bin_dir = ensure_binaries()
    plane = ControlPlane(Path(tempfile.mkdtemp(prefix="llmservice-e2e-")), bin_dir)
    plane.up()
    try:
        yield plane
    finally:
        # The last run's logs (components and operator) stay for a post-mortem.
        shutil.rmtree(LOG_ARCHIVE, ignore_errors=True)
        shutil.copytree(plane.logs, LOG_ARCHIVE)
        if request.session.testsfailed:
            print(
                f"\ne2e: the control plane's and operator's logs are in {LOG_ARCHIVE}",
                file=sys.stderr,
            )
        plane.down()


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """kubectl/helm as the cluster admin (system:masters)."""
    return control_plane.kubectl


@pytest.fixture(scope="session")
def chart(kubectl: Kubectl) -> dict[str, Any]:
    """The chart, installed once; its operator Deployment (see support/chart.py)."""
    return install_chart(kubectl)


@pytest.fixture(scope="session")
def operator(control_plane: ControlPlane, chart: dict[str, Any]) -> Iterator[OperatorProcess]:
    """The chart's operator, run locally with its ServiceAccount's token (see operator_process).

    At the end of the session its log must show no request the API server refused for lack of
    permission: the chart's RBAC rules were sufficient for everything the tests made it do.
    """
    process = OperatorProcess(control_plane, chart, control_plane.logs / "operator.log")
    process.start()
    yield process
    process.stop()
    refused = [
        line
        for line in (control_plane.logs / "operator.log").read_text(errors="replace").splitlines()
        # RBAC's refusal, not e.g. NamespaceLifecycle's 403 for a namespace being deleted.
        if re.search(r'User "[^"]+" cannot \S+ resource', line)
    ]
    assert not refused, "the operator was refused by RBAC:\n" + "\n".join(refused[:20])


@pytest.fixture
def llmservices(kubectl: Kubectl, operator: OperatorProcess) -> LLMServices:
    return LLMServices(kubectl, operator)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards, which also deletes what the test made)."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:40]
    name = f"{stem.strip('-')}-{secrets.token_hex(3)}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false")
