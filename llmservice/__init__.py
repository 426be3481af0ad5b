"""llmservice: a Kubernetes operator and a GPU serving runtime for large language models.

This folder is only the import root. The code lives in the top-level folders `operator/`,
`runtime/`, `scheduler/`, `kvcache/` and `kernels/`, which `pyproject.toml` maps to
`llmservice.operator`, `llmservice.runtime`, ... (a package named `operator` at the top
level would shadow the standard library).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
