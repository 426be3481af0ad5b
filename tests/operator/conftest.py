"""Shared fixtures of the operator tests: a minimal LLMService, the examples, helm.

Fixtures only (no helper imports): with pytest's importlib mode test modules cannot import
each other, so everything shared comes through here.
"""

from __future__ import annotations

import copy
import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmservice.operator.resource import LLMService, parse_llmservice

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

# The smallest valid LLMService; tests change one thing at a time.
MINIMAL: dict[str, Any] = {
    "apiVersion": "llmservice.io/v1alpha1",
    "kind": "LLMService",
    "metadata": {"name": "demo", "namespace": "team", "uid": "uid-1", "generation": 3},
    "spec": {"model": {"name": "demo", "source": "builtin:tiny-reasoner"}},
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "example_path" in metafunc.fixturenames:
        metafunc.parametrize("example_path", EXAMPLES, ids=[p.stem for p in EXAMPLES])


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def body() -> dict[str, Any]:
    """A fresh copy of the minimal LLMService body."""
    return copy.deepcopy(MINIMAL)


@pytest.fixture
def make_svc() -> Callable[..., LLMService]:
    """make_svc(**spec_fields) -> the minimal LLMService with those spec fields set."""

    def make(**spec: Any) -> LLMService:
        data = copy.deepcopy(MINIMAL)
        data["spec"].update(spec)
        return parse_llmservice(data)

    return make


@pytest.fixture
def load_example() -> Callable[[Path], dict[str, Any]]:
    def load(path: Path) -> dict[str, Any]:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        (found,) = [d for d in documents if d.get("kind") == "LLMService"]
        return dict(found)

    return load


def _find_tool(name: str) -> str | None:
    """$LLMSERVICE_<NAME>, else PATH, else the e2e harness's binary cache."""
    explicit = os.environ.get(f"LLMSERVICE_{name.upper()}")
    if explicit:
        return explicit
    cached = sorted(glob.glob(os.path.expanduser(f"~/.cache/llmservice/k8s/*/bin/{name}")))
    return shutil.which(name) or (cached[-1] if cached else None)


@pytest.fixture
def helm() -> str:
    path = _find_tool("helm")
    if path is None:
        pytest.skip("helm not found: set LLMSERVICE_HELM or build the e2e harness's binaries once")
    return path


@pytest.fixture
def helm_template(helm: str, repo: Path) -> Callable[..., list[dict[str, Any]]]:
    """`helm template` of the chart (release "llms" in llm-system) with extra arguments: its documents."""

    def render(*args: str) -> list[dict[str, Any]]:
        chart = str(repo / "charts" / "llmservice")
        command = [helm, "template", "llms", chart, "-n", "llm-system", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return render


def _openapi_dir() -> Path | None:
    """api/openapi-spec/v3 of the k8s.io/kubernetes module in Go's module cache, if present.

    The e2e harness downloads that module (it builds the control plane from it); without it the
    schema tests skip.
    """
    roots = [os.environ.get("GOMODCACHE", ""), os.path.expanduser("~/go/pkg/mod")]
    for root in filter(None, roots):
        found = sorted(
            glob.glob(os.path.join(root, "k8s.io", "kubernetes@v1.*", "api", "openapi-spec", "v3"))
        )
        if found:
            return Path(found[-1])
    return None


@pytest.fixture(scope="session")
def k8s_validate() -> Callable[[dict[str, Any]], list[str]]:
    """validate(manifest) -> errors against the Kubernetes OpenAPI schema of its kind.

    Strict like kubeconform's strict mode: an unknown field is an error too.
    """
    import json

    jsonschema = pytest.importorskip("jsonschema")
    spec_dir = _openapi_dir()
    if spec_dir is None:
        pytest.skip("no k8s.io/kubernetes module in Go's module cache (the e2e harness fetches it)")
    schemas: dict[str, Any] = {}
    for path in spec_dir.glob("*.json"):
        schemas.update(json.loads(path.read_text()).get("components", {}).get("schemas", {}))
    by_kind: dict[tuple[str, str], str] = {}
    for name, schema in schemas.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            by_kind.setdefault((api_version, gvk["kind"]), name)
    for schema in schemas.values():
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    document = {"components": {"schemas": schemas}}

    def validate(manifest: dict[str, Any]) -> list[str]:
        name = by_kind.get((manifest["apiVersion"], manifest["kind"]))
        if name is None:
            return [f"unknown kind {manifest['apiVersion']} {manifest['kind']}"]
        root = {**document, "allOf": [{"$ref": f"#/components/schemas/{name}"}]}
        errors = jsonschema.Draft4Validator(root).iter_errors(manifest)
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]

    return validate
