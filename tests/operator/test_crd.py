"""The generated CRD: in sync with the checked-in files, structural, complete, and in agreement
with the pydantic models (defaults and validation) that the operator and `render` use."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmservice.operator import rules
from llmservice.operator.crd import apply_defaults, build_crd, crd_yaml, openapi_schema
from llmservice.operator.resource import parse_llmservice
from llmservice.operator.schema_types import CelRule

# Keywords a structural schema must not carry; the API server drops what apiextensions/v1 lacks
# (e.g. `propertyNames`) without a word, so a check written that way would never run.
_NON_STRUCTURAL = {"$ref", "$defs", "title", "const", "oneOf", "allOf", "not", "propertyNames"}


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def test_the_checked_in_crd_is_current(repo: Path) -> None:
    assert (repo / "crds" / "llmservice.yaml").read_text() == crd_yaml(), (
        "crds/llmservice.yaml is out of date: run `llmservice crd > crds/llmservice.yaml`"
    )


def test_the_chart_ships_the_same_crd(repo: Path) -> None:
    chart_copy = repo / "charts" / "llmservice" / "files" / "llmservice-crd.yaml"
    assert chart_copy.read_text() == crd_yaml(), (
        "the chart's CRD is out of date: cp crds/llmservice.yaml charts/llmservice/files/llmservice-crd.yaml"
    )


def test_names_scope_and_subresources() -> None:
    spec = build_crd()["spec"]
    assert (spec["group"], spec["scope"]) == ("llmservice.io", "Namespaced")
    assert spec["names"]["kind"] == "LLMService" and spec["names"]["shortNames"] == ["llms"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert {"Model", "Ready", "Phase", "Age"} <= set(columns)


def test_the_schema_is_structural() -> None:
    for path, node in _nodes(openapi_schema()):
        assert not _NON_STRUCTURAL & node.keys(), f"{path}: {sorted(_NON_STRUCTURAL & node.keys())}"
        special = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert "type" in node or special, f"{path} has no type"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf outside int-or-string"
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
        assert node.get("default", ...) is not None, f"{path} has a null default"
        if path.startswith(".spec") and path != ".spec" and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"


def test_numeric_bounds_survive_the_api_servers_float64() -> None:
    """The API server keeps minimum/maximum as float64 and writes them back in shortest form:
    an int64 bound such as 2^63 - 1 came back changed (e2e/test_chart.py caught it)."""
    for path, node in _nodes(openapi_schema()):
        for key in ("minimum", "maximum"):
            if key in node:
                assert abs(node[key]) <= 2**53, (
                    f"{path}.{key} = {node[key]} is not exact in float64"
                )


def test_only_affinity_passes_unknown_fields_through() -> None:
    preserved = [
        path
        for path, node in _nodes(openapi_schema())
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert preserved == [".spec.scheduling.affinity"]


def test_every_cel_rule_is_in_the_crd() -> None:
    crd_rules = [
        rule["rule"]
        for _, node in _nodes(openapi_schema())
        for rule in node.get("x-kubernetes-validations", [])
    ]
    declared = [value for value in vars(rules).values() if isinstance(value, CelRule)]
    assert len(declared) >= 10
    for rule in declared:
        assert rule.rule in crd_rules, rule.message
        assert "\n" not in rule.message


def test_enums_reach_the_crd() -> None:
    spec = openapi_schema()["properties"]["spec"]["properties"]
    assert spec["autoscaling"]["properties"]["metric"]["enum"] == [
        "num_requests_waiting",
        "kv_cache_usage_perc",
        "num_requests_running",
    ]
    engine = spec["engine"]["properties"]
    assert engine["schedulingPolicy"]["enum"] == ["fcfs", "priority"]
    assert engine["reasoningParser"]["enum"] == ["deepseek_r1", "qwen3"]
    assert engine["gpuMemoryUtilization"]["exclusiveMinimum"] is True


def _without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def test_the_crd_defaults_are_the_models_defaults(
    body: dict[str, Any], example_path: Path, load_example: Callable[..., dict[str, Any]]
) -> None:
    for raw in (body, load_example(example_path)):
        defaulted = apply_defaults(copy.deepcopy(raw), openapi_schema())
        from_models = parse_llmservice(raw).spec.model_dump(by_alias=True, exclude_none=True)
        assert _without_empty(defaulted["spec"]) == _without_empty(from_models)


def test_the_examples_satisfy_the_openapi_schema(
    example_path: Path, load_example: Callable[..., dict[str, Any]]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    # OpenAPI v3.0 validation keywords are JSON Schema draft 4's (boolean exclusiveMinimum).
    validator = jsonschema.Draft4Validator(openapi_schema())
    assert list(validator.iter_errors(load_example(example_path))) == []


@pytest.mark.parametrize(
    "spec",
    [
        {"replicas": -1},
        {"shmSize": "8GB"},
        {"engine": {"dtype": "int3"}},
        {"engine": {"gpuMemoryUtilization": 0}},
        {"autoscaling": {"metric": "gpu_util"}},
        {"auth": {"apiKeySecretRef": {"name": "Bad_Name", "key": "k"}}},
        {"resources": {"gpus": -1}},
    ],
)
def test_the_openapi_schema_rejects_what_the_models_reject(
    body: dict[str, Any], spec: dict[str, Any]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    body["spec"].update(spec)
    assert list(jsonschema.Draft4Validator(openapi_schema()).iter_errors(body)), spec


def test_object_defaults_are_complete() -> None:
    """The API server checks a default against its CEL rules without inner defaulting: a
    default of {} for autoscaling failed with "no such key: minReplicas" (found on a real API
    server), so every object default must already hold its fields' defaults."""
    for path, node in _nodes(openapi_schema()):
        if node.get("type") == "object" and "default" in node:
            assert node["default"] == apply_defaults(node["default"], node), path


def test_label_key_limits_become_a_cel_rule_over_the_map() -> None:
    from llmservice.operator.schema_types import LABEL_KEY, LABEL_VALUE

    peer = openapi_schema()["properties"]["spec"]["properties"]["networkPolicy"]["properties"]
    selector = peer["allowFrom"]["items"]["properties"]["podSelector"]["properties"]
    match_labels = selector["matchLabels"]
    assert match_labels["maxProperties"] == 64  # bounds the rule's cost estimate
    (rule,) = match_labels["x-kubernetes-validations"]
    # pydantic's patternProperties (apiextensions/v1 has none) became the key pattern's check.
    assert rule["rule"] == (
        f"self.all(k, size(k) <= 317 && k.matches('{LABEL_KEY.replace(chr(92), chr(92) * 2)}'))"
    )
    assert "patternProperties" not in match_labels
    assert match_labels["additionalProperties"]["pattern"] == LABEL_VALUE


def test_a_map_key_constraint_without_a_cel_translation_is_refused() -> None:
    from llmservice.operator.crd import structural

    node = {"type": "object", "propertyNames": {"format": "email"}, "additionalProperties": {}}
    with pytest.raises(ValueError, match="format"):
        structural(node, {})
