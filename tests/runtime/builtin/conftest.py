"""Fixtures of the built-in model's tests: its shipped folder and tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmservice.runtime.builtin import resolve_builtin


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return resolve_builtin("builtin:tiny-reasoner")


@pytest.fixture(scope="session")
def hf_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)
