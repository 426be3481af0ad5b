"""`llmservice crd` and `llmservice render` as a person runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from llmservice.operator.crd import crd_yaml


def _llmservice(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("llmservice") or f"{sys.prefix}/bin/llmservice"
    return subprocess.run([exe, *args], capture_output=True, text=True, input=stdin, timeout=120)


def test_crd_prints_the_crd() -> None:
    result = _llmservice("crd")
    assert result.returncode == 0, result.stderr
    assert result.stdout == crd_yaml()


def test_render_prints_the_owned_objects_of_every_example(repo: Path) -> None:
    files = sorted((repo / "examples").glob("*.yaml"))
    args = [arg for path in files for arg in ("-f", str(path))]
    result = _llmservice("render", *args)
    assert result.returncode == 0, result.stderr
    rendered = [
        (d["kind"], d["metadata"]["namespace"], d["metadata"]["name"])
        for d in yaml.safe_load_all(result.stdout)
    ]
    assert rendered == [
        ("Service", "llm", "llama-70b"),
        ("Deployment", "llm", "llama-70b"),
        ("PodDisruptionBudget", "llm", "llama-70b"),
        ("NetworkPolicy", "llm", "llama-70b"),
        ("HorizontalPodAutoscaler", "llm", "llama-70b"),
        ("Service", "default", "llama-8b"),
        ("Deployment", "default", "llama-8b"),
        ("PodDisruptionBudget", "default", "llama-8b"),
        ("NetworkPolicy", "default", "llama-8b"),
        ("Service", "default", "tiny-reasoner"),
        ("Deployment", "default", "tiny-reasoner"),
        ("PodDisruptionBudget", "default", "tiny-reasoner"),
        ("NetworkPolicy", "default", "tiny-reasoner"),
    ]
    assert "&id" not in result.stdout


def test_render_reads_stdin_and_uses_the_given_default_image() -> None:
    manifest = (
        "kind: LLMService\nmetadata: {name: m}\nspec: {model: {name: m, source: 'builtin:x'}}\n"
    )
    result = _llmservice(
        "render", "-f", "-", "--default-image", "reg/rt:7", "-n", "ns1", stdin=manifest
    )
    assert result.returncode == 0, result.stderr
    deployment = next(d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == "ns1"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/rt:7"
    assert "ownerReferences" not in deployment["metadata"], "no uid before the CR is applied"


def test_render_rejects_an_invalid_resource_naming_the_field() -> None:
    manifest = "kind: LLMService\nmetadata: {name: m}\nspec: {model: {name: m, source: 'builtin:x'}, replicas: -2}\n"
    result = _llmservice("render", "-f", "-", stdin=manifest)
    assert result.returncode == 1
    assert "LLMService m" in result.stderr and "spec.replicas" in result.stderr
    assert result.stdout == ""


def test_crd_and_render_stay_light() -> None:
    code = (
        "import sys; from llmservice.runtime.cli import main; main(['crd']); "
        "heavy = {'torch', 'kopf', 'transformers'} & set(sys.modules); "
        "sys.exit(f'imported {sorted(heavy)}' if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_runtime_accepts_the_flags_the_operator_passes(
    example_path: Path, load_example: Callable[..., dict[str, Any]]
) -> None:
    from llmservice.operator.builders.runtime_args import server_args
    from llmservice.operator.resource import parse_llmservice
    from llmservice.runtime.cli import build_parser

    svc = parse_llmservice(load_example(example_path))
    parsed = build_parser().parse_args(["serve", *server_args(svc)])
    assert parsed.port == 8000 and parsed.host == "0.0.0.0"
    assert parsed.shutdown_timeout == svc.spec.shutdown_timeout_seconds
    assert parsed.tensor_parallel_size == svc.spec.engine.tensor_parallel_size


def test_the_runtime_takes_the_api_key_from_the_variable_the_operator_fills(
    monkeypatch: Any,
) -> None:
    from llmservice.operator.builders.runtime_args import API_KEY_ENV
    from llmservice.runtime.cli import build_parser

    monkeypatch.setenv(API_KEY_ENV, "sk-from-secret")
    assert build_parser().parse_args(["serve"]).api_key == "sk-from-secret"
    monkeypatch.delenv(API_KEY_ENV)
    assert build_parser().parse_args(["serve"]).api_key is None
