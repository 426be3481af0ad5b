"""Typed copies of the few core Kubernetes types an LLMService embeds.

They are typed (not `x-kubernetes-preserve-unknown-fields`) so the API server rejects a
misspelt toleration effect or selector operator when the LLMService is applied, instead of
the operator failing later when it applies the Deployment or the NetworkPolicy.
Node affinity is the exception: its schema is deep and rarely hand-written wrong, so it is
passed through as-is (`schema.Scheduling.affinity`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from llmservice.operator.rules import (
    PEER_ONE_KIND,
    SELECTOR_VALUES,
    TOLERATION_EXISTS_NO_VALUE,
    TOLERATION_KEY_OR_EXISTS,
    TOLERATION_SECONDS_NO_EXECUTE,
)
from llmservice.operator.schema_types import LABEL_KEY, LABEL_VALUE, CamelModel, cel_rules

LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY, max_length=317)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE, max_length=63)]
# Bounds of tolerationSeconds (an int64). The API server keeps a CRD schema's minimum and maximum
# as float64 and writes them back in the shortest decimal form: 2^63 - 1 came back as
# 9223372036854776000, 2^62 as 4611686018427388000 (a changed schema, e2e/test_chart.py). A
# round 10^15 s (31 million years) survives exactly and is beyond any real toleration.
TOLERATION_SECONDS_BOUND = 10**15


class LabelSelectorRequirement(CamelModel):
    """One `matchExpressions` entry of a label selector."""

    model_config = CamelModel.model_config | {"json_schema_extra": cel_rules(SELECTOR_VALUES)}

    key: LabelKey = Field(description="The label key the selector applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values."
    )
    values: list[LabelValue] | None = Field(
        default=None,
        max_length=64,
        description="Values for In and NotIn; must be empty for Exists and DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        SELECTOR_VALUES.require(bool(self.values) == (self.operator in ("In", "NotIn")))
        return self


class LabelSelector(CamelModel):
    """A Kubernetes label selector; an empty selector selects everything."""

    match_labels: dict[LabelKey, LabelValue] | None = Field(
        default=None, max_length=64, description="Labels that must all match exactly."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=32, description="Requirements that must all hold."
    )


class IPBlock(CamelModel):
    """A CIDR range allowed to connect (for clients outside the cluster's pod network)."""

    cidr: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="A CIDR such as 10.0.0.0/8."
    )
    except_: list[Annotated[str, StringConstraints(max_length=64)]] | None = Field(
        default=None, alias="except", max_length=32, description="CIDRs excluded from cidr."
    )


class NetworkPolicyPeer(CamelModel):
    """Who may connect: pods by label, namespaces by label (both: pods in those namespaces), or IPs."""

    model_config = CamelModel.model_config | {"json_schema_extra": cel_rules(PEER_ONE_KIND)}

    pod_selector: LabelSelector | None = Field(
        default=None,
        description="Pods allowed to connect; alone it means pods of the LLMService's namespace.",
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods are allowed to connect."
    )
    ip_block: IPBlock | None = Field(default=None, description="IP ranges allowed to connect.")

    @model_validator(mode="after")
    def _one_kind_of_peer(self) -> NetworkPolicyPeer:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        PEER_ONE_KIND.require(selectors != (self.ip_block is not None))
        return self


class Toleration(CamelModel):
    """A Kubernetes toleration, e.g. for the taint a cloud puts on its GPU nodes."""

    model_config = CamelModel.model_config | {
        "json_schema_extra": cel_rules(
            TOLERATION_KEY_OR_EXISTS, TOLERATION_SECONDS_NO_EXECUTE, TOLERATION_EXISTS_NO_VALUE
        )
    }

    key: LabelKey | None = Field(default=None, description="The taint key; empty matches all.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (the default)."
    )
    value: LabelValue | None = Field(default=None, description="The taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint effect to tolerate; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=-TOLERATION_SECONDS_BOUND,
        le=TOLERATION_SECONDS_BOUND,
        description="For NoExecute: how long the pod stays bound after the taint.",
    )

    @model_validator(mode="after")
    def _kubernetes_rules(self) -> Toleration:
        TOLERATION_KEY_OR_EXISTS.require(self.key is not None or self.operator == "Exists")
        TOLERATION_SECONDS_NO_EXECUTE.require(
            self.toleration_seconds is None or self.effect == "NoExecute"
        )
        TOLERATION_EXISTS_NO_VALUE.require(self.operator != "Exists" or not self.value)
        return self
