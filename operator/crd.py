"""The LLMService CustomResourceDefinition, generated from the pydantic schema source.

Pydantic emits JSON Schema 2020-12 (`$ref`s, `anyOf [X, null]` for optional fields, titles,
numeric `exclusiveMinimum`). The API server wants a *structural* OpenAPI v3.0 schema: every
node typed, no references, `anyOf` only as a value validation (or the int-or-string shape).
`structural()` rewrites one into the other; `build_crd()` wraps it with names, subresources and
printer columns. `crds/llmservice.yaml` is `crd_yaml()`, checked in and tested to be current.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from llmservice.operator.rules import NAME_IS_DNS_LABEL
from llmservice.operator.schema import LLMServiceSpec, LLMServiceStatus

GROUP = "llmservice.io"
VERSION = "v1alpha1"
KIND = "LLMService"
PLURAL = "llmservices"
SINGULAR = "llmservice"
SHORT_NAMES = ["llms"]
API_VERSION = f"{GROUP}/{VERSION}"

# Keys of pydantic's output that mean nothing to (or are refused by) the API server.
_DROPPED_KEYS = frozenset({"title", "additionalProperties", "$defs"})

Schema = dict[str, Any]


def structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Rewrite one pydantic JSON-schema node into a structural OpenAPI v3 node (recursively)."""
    node = _inline(node, defs)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: structural(child, defs) for name, child in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "exclusiveMinimum":
            # JSON Schema 2020-12 number -> OpenAPI 3.0 flag on `minimum`.
            out["minimum"], out["exclusiveMinimum"] = value, True
        else:
            out[key] = value
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):  # a map: dict[str, X]
        out["additionalProperties"] = structural(extra, defs)
    keys = out.pop("propertyNames", {})
    if "patternProperties" in out:
        # A map whose keys have a pattern (dict[LabelKey, X]): pydantic puts the pattern here.
        ((pattern, value),) = out.pop("patternProperties").items()
        out["additionalProperties"] = structural(value, defs)
        keys = {**keys, "pattern": pattern}
    if keys:
        _key_rules_to_cel(out, keys)
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "array" and "x-kubernetes-list-type" not in out:
        out["x-kubernetes-list-type"] = "atomic"
    # type and description first, so a person reading crds/llmservice.yaml sees them first.
    first = [key for key in ("type", "description") if key in out]
    return {key: out[key] for key in [*first, *(k for k in out if k not in first)]}


# A map's key constraints (pydantic's `propertyNames`) as CEL over the keys: apiextensions/v1 has
# no `propertyNames`, and the API server silently drops what it does not know, so the check would
# never run. `maxProperties` bounds the rule's estimated cost, which the API server enforces.
_MAX_MAP_ENTRIES = 64


def _key_check(constraint: str, value: Any) -> str:
    """One JSON-schema string constraint on a map key `k`, as a CEL expression."""
    if constraint == "maxLength":
        return f"size(k) <= {int(value)}"
    if constraint == "minLength":
        return f"size(k) >= {int(value)}"
    if constraint == "pattern":
        escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
        return f"k.matches('{escaped}')"
    raise ValueError(f"map key constraint {constraint!r} has no CEL translation")


def _key_rules_to_cel(out: Schema, keys: Schema) -> None:
    checks = [_key_check(name, value) for name, value in sorted(keys.items())]
    limits = ", ".join(f"{name} {value}" for name, value in sorted(keys.items()))
    out.setdefault("maxProperties", _MAX_MAP_ENTRIES)
    out.setdefault("x-kubernetes-validations", []).append(
        {
            "rule": f"self.all(k, {' && '.join(checks)})",
            "message": f"every key must satisfy {limits}",
        }
    )


def _inline(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Resolve `$ref` and collapse `anyOf [X, null]` into X, keeping the field's own keys."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **rest}, defs)
    branches = node.get("anyOf")
    if branches and not node.get("x-kubernetes-int-or-string"):
        kept = [b for b in branches if b.get("type") != "null"]
        if len(kept) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", ...) is None:
                del rest["default"]  # absent means None; a null default is not structural
            # The field's description wins over the referenced model's docstring.
            return _inline({**kept[0], **rest}, defs)
    return node


def _model_schema(model: type[LLMServiceSpec] | type[LLMServiceStatus]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def openapi_schema() -> Schema:
    """The CRD version's `openAPIV3Schema`."""
    return {
        "type": "object",
        "description": (
            "LLMService serves a large language model behind an in-cluster OpenAI-compatible "
            "endpoint: GPU pods, a Service, a NetworkPolicy, autoscaling and a disruption budget."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _model_schema(LLMServiceSpec),
            "status": _model_schema(LLMServiceStatus),
        },
        "x-kubernetes-validations": [
            {k: v for k, v in NAME_IS_DNS_LABEL.as_schema().items() if k != "fieldPath"}
        ],
    }


def _printer_columns() -> list[dict[str, Any]]:
    degraded = '.status.conditions[?(@.type=="Degraded")].reason'
    return [
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Reason", "type": "string", "jsonPath": degraded, "priority": 1},
        {"name": "URL", "type": "string", "jsonPath": ".status.url", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "llmservice"},
            # Uninstalling the Helm chart must not delete every LLMService with the CRD.
            "annotations": {"helm.sh/resource-policy": "keep"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["llm"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML document checked in at crds/llmservice.yaml."""
    header = "# Generated by `llmservice crd` from operator/schema.py: do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)


def apply_defaults(obj: Any, schema: Schema) -> Any:
    """Fill in the schema's defaults the way the API server does (a new object is returned).

    A missing property with a default gets a copy of it, then defaulting recurses into it, so
    an object defaulted to {} receives its own fields' defaults, as the API server does.
    """
    if isinstance(obj, dict):
        out = dict(obj)
        properties = schema.get("properties", {})
        for name, child in properties.items():
            if name not in out and "default" in child:
                out[name] = copy.deepcopy(child["default"])
            if name in out:
                out[name] = apply_defaults(out[name], child)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            out = {
                k: apply_defaults(v, extra) if k not in properties else v for k, v in out.items()
            }
        return out
    if isinstance(obj, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in obj]
    return obj
