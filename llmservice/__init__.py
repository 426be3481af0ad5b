"""llmservice: a Kubernetes operator and a GPU serving runtime for large language models.

This folder is only the import root. The code lives in the top-level folders `operator/`,
`runtime/`, `scheduler/`, `kvcache/` and `kernels/`, which `pyproject.toml` maps to
`llmservice.operator`, `llmservice.runtime`, ... (a package named `operator` at the top
level would shadow the standard library).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["LLM", "SamplingParams", "__version__"]

if TYPE_CHECKING:
    from llmservice.runtime.llm import LLM
    from llmservice.runtime.sampling_params import SamplingParams

# Public names imported on first use, so `import llmservice` (and `llmservice --version`)
# does not pay for importing torch.
_LAZY_EXPORTS = {
    "LLM": "llmservice.runtime.llm",
    "SamplingParams": "llmservice.runtime.sampling_params",
}


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmservice' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
