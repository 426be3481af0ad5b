"""The operator's own configuration, read once from the environment.

The Helm chart sets these variables on the operator's Deployment; `llmservice render` reads the
same ones, so what it prints is what the operator in that environment would create.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from llmservice import __version__


@dataclass(frozen=True)
class Settings:
    """How the operator builds and applies the objects of every LLMService."""

    default_image: str = f"llmservice-runtime:{__version__}"
    """Runtime image for LLMServices without spec.image (LLMSERVICE_DEFAULT_IMAGE)."""
    operator_namespace: str = "llmservice-system"
    """Namespace the operator runs in; its pods may always reach model servers (POD_NAMESPACE)."""
    field_manager: str = "llmservice-operator"
    """Server-side apply field manager of every owned object (LLMSERVICE_FIELD_MANAGER)."""
    watch_namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty means the whole cluster (LLMSERVICE_WATCH_NAMESPACES, comma list)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        namespaces = env.get("LLMSERVICE_WATCH_NAMESPACES", "")
        return cls(
            default_image=env.get("LLMSERVICE_DEFAULT_IMAGE") or defaults.default_image,
            operator_namespace=env.get("POD_NAMESPACE") or defaults.operator_namespace,
            field_manager=env.get("LLMSERVICE_FIELD_MANAGER") or defaults.field_manager,
            watch_namespaces=tuple(ns.strip() for ns in namespaces.split(",") if ns.strip()),
        )
