"""One LLMService as the operator sees it: identity (metadata) plus the validated spec.

`parse_llmservice` is the only way in: a body from the API server (or a YAML file for `render`)
becomes an `LLMService`, or an `InvalidLLMService` whose message names each bad field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from llmservice.operator.rules import NAME_IS_DNS_LABEL
from llmservice.operator.schema import LLMServiceSpec

SERVER_PORT = 8000


class InvalidLLMService(ValueError):
    """The resource cannot be served as written; the message says which field and why."""


@dataclass(frozen=True)
class LLMService:
    """A parsed LLMService resource."""

    name: str
    """metadata.name: also the name of every owned object."""
    namespace: str
    """metadata.namespace."""
    spec: LLMServiceSpec
    """The validated spec, defaults filled in."""
    uid: str | None = None
    """metadata.uid (None for a file that was never applied); owner references need it."""
    generation: int | None = None
    """metadata.generation, reported back as status.observedGeneration."""

    @property
    def url(self) -> str:
        """The in-cluster OpenAI base URL."""
        return f"http://{self.name}.{self.namespace}.svc.cluster.local:{SERVER_PORT}/v1"

    @property
    def autoscaled(self) -> bool:
        return self.spec.autoscaling.enabled

    @property
    def replicas(self) -> int:
        """Pods wanted when not autoscaled (spec.replicas defaults to 1)."""
        return 1 if self.spec.replicas is None else self.spec.replicas


def parse_llmservice(body: dict[str, Any], default_namespace: str = "default") -> LLMService:
    """Validate a whole LLMService body; raise InvalidLLMService naming every bad field."""
    meta = body.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str):
        raise InvalidLLMService("metadata.name is required")
    try:
        NAME_IS_DNS_LABEL.require(
            len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) is not None
        )
        spec = LLMServiceSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        raise InvalidLLMService(_describe(error)) from None
    except ValueError as error:
        raise InvalidLLMService(str(error)) from None
    return LLMService(
        name=name,
        namespace=meta.get("namespace") or default_namespace,
        spec=spec,
        uid=meta.get("uid"),
        generation=meta.get("generation"),
    )


def _describe(error: ValidationError) -> str:
    """One line per problem, each starting with the field's path (spec.x.y)."""
    lines = []
    for problem in error.errors():
        path = ".".join(["spec", *(str(part) for part in problem["loc"])])
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(message if message.startswith("spec.") else f"{path}: {message}")
    return "; ".join(lines)
