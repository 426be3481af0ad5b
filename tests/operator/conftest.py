"""Shared fixtures of the operator tests: a minimal LLMService, the examples, helm.

Fixtures only (no helper imports): with pytest's importlib mode test modules cannot import
each other, so everything shared comes through here.
"""

from __future__ import annotations

import copy
import glob
import os
import shutil
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
