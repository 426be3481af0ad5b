"""Building blocks of the LLMService schema: Kubernetes string formats, quantities and CEL rules.

The schema source (`schema.py`) is made of pydantic models. Two things must hold for every
constraint in it:
- the CRD generated from it (`crd.py`) makes the API server enforce the constraint, and
- `llmservice render` (pydantic, no API server) enforces the same constraint with the same message.

Patterns and bounds become OpenAPI keywords (`pattern`, `minimum`, `enum`) on both sides by
construction. Cross-field rules are written once as a `CelRule`, whose CEL text goes into
`x-kubernetes-validations` and whose message is raised by the model's Python twin of the check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

# DNS-1123 subdomain: names of Secrets, PersistentVolumeClaims, PriorityClasses.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# DNS-1123 label: a PersistentVolumeClaim named in a pvc:// source.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A key inside a Secret's data.
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
# A Kubernetes resource quantity without sign: 8, 500m, 64Gi, 1.5, 1e3.
QUANTITY = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+]?[0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
# An int-or-string written as a percentage (rollout and disruption budget fields).
PERCENT = r"^(100|[1-9]?[0-9])%$"
# A label key (a qualified name): an optional DNS-subdomain prefix and '/', then 1-63 characters.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
# A label value: empty, or 1-63 characters starting and ending with a letter or digit.
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
# A quantity above zero: a nonzero digit in the integer part or in the fraction.
POSITIVE_QUANTITY = (
    r"^([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)"
    r"([eE][+]?[0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
)
# Counts in Deployments and PodDisruptionBudgets are int32.
INT32_MAX = 2**31 - 1
# An extended resource name, e.g. nvidia.com/gpu, amd.com/gpu, habana.ai/gaudi.
EXTENDED_RESOURCE = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry, also enforced in Python with the same message."""

    rule: str
    """The CEL expression, evaluated by the API server with `self` bound to the object."""
    message: str
    """What the person applying the resource reads; names the field and how to fix it."""
    field_path: str | None = None
    """The field the error is reported on, relative to the object holding the rule."""
    reason: str = "FieldValueInvalid"
    """FieldValueInvalid, FieldValueForbidden or FieldValueRequired (HTTP 422 cause type)."""

    def as_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message, "reason": self.reason}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        return entry

    def require(self, holds: bool) -> None:
        """The Python twin of the CEL check: raise the rule's message unless it holds."""
        if not holds:
            raise ValueError(self.message)


def cel_rules(*rules: CelRule) -> dict[str, Any]:
    """The `json_schema_extra` that attaches CEL rules to a model or a field."""
    return {"x-kubernetes-validations": [rule.as_schema() for rule in rules]}


class CamelModel(BaseModel):
    """Base of every schema model: camelCase names on the wire, unknown fields rejected.

    The API server prunes unknown fields silently; `render` rejects them so a typo in a GitOps
    repository is caught before it reaches the cluster.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def _quantity_to_str(value: object) -> object:
    # A YAML author writes `cpu: 8` as often as `cpu: "8"`; both are the same quantity.
    if isinstance(value, bool):
        raise ValueError("a quantity must be a number or a string such as 8, 500m or 64Gi")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a quantity must not be negative")
        return str(value)
    return value


def _int_or_percent(value: int | str) -> int | str:
    if (isinstance(value, int) and not 0 <= value <= INT32_MAX) or (
        isinstance(value, str) and re.fullmatch(PERCENT, value) is None
    ):
        raise ValueError(f"must be an integer from 0 to {INT32_MAX} or a percentage such as 25%")
    return value


# The int-or-string shape of structural schemas; `pattern` only constrains the string branch.
_INT_OR_STRING = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
}

Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    StringConstraints(pattern=QUANTITY, max_length=64),
    WithJsonSchema({**_INT_OR_STRING, "pattern": QUANTITY, "minimum": 0}),
]
"""A resource quantity (`8`, `500m`, `64Gi`); integers are accepted and kept as strings."""

PositiveQuantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    StringConstraints(pattern=POSITIVE_QUANTITY, max_length=64),
    WithJsonSchema({**_INT_OR_STRING, "pattern": POSITIVE_QUANTITY, "minimum": 1}),
]
"""A quantity above zero (a volume size, an autoscaling target): Kubernetes refuses 0 there."""

IntOrPercent = Annotated[
    int | str,
    AfterValidator(_int_or_percent),
    WithJsonSchema({**_INT_OR_STRING, "pattern": PERCENT, "minimum": 0, "maximum": INT32_MAX}),
]
"""A count or a percentage of pods, as in a Deployment's rollout fields."""


def is_zero(value: int | str) -> bool:
    """0 and "0%" both mean no pods."""
    return value in (0, "0%")


SecretName = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN, max_length=253)]
SecretKey = Annotated[str, StringConstraints(pattern=SECRET_KEY, max_length=253)]


class SecretKeyRef(CamelModel):
    """A key of a Secret in the LLMService's namespace."""

    name: SecretName = Field(description="Name of the Secret (a DNS-1123 subdomain).")
    key: SecretKey = Field(description="Key inside the Secret's data.")
