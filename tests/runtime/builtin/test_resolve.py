"""`builtin:` names resolve to the shipped checkpoint; anything else is refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmservice.runtime.builtin as builtin
from llmservice.runtime.builtin import resolve_builtin, resolve_model_path


def test_tiny_reasoner_resolves_to_its_checkpoint_folder() -> None:
    path = resolve_builtin("builtin:tiny-reasoner")
    assert path.is_dir()
    assert path.name == "tiny-reasoner"
    assert {p.name for p in path.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    }


def test_an_unknown_builtin_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown built-in model 'builtin:gpt-5'.*builtin:tiny-reasoner"
    ):
        resolve_builtin("builtin:gpt-5")


def test_a_name_without_the_prefix_is_not_a_builtin() -> None:
    with pytest.raises(ValueError, match="not a built-in model name"):
        resolve_builtin("tiny-reasoner")


def test_a_missing_checkpoint_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(builtin.BUILTIN_MODELS, "ghost", "no-such-folder")
    with pytest.raises(FileNotFoundError, match="checkpoint of builtin:ghost is missing"):
        resolve_builtin("builtin:ghost")


def test_model_paths_pass_through(tmp_path: Path) -> None:
    assert resolve_model_path(str(tmp_path)) == tmp_path
    assert resolve_model_path("builtin:tiny-reasoner") == resolve_builtin("builtin:tiny-reasoner")
