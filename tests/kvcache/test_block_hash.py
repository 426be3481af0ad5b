"""Chained block hashes."""

from __future__ import annotations

from llmservice.kvcache import hash_block_tokens


def test_hash_depends_on_parent_tokens_and_extra_keys() -> None:
    first = hash_block_tokens(None, [1, 2, 3, 4])
    assert first == hash_block_tokens(None, (1, 2, 3, 4))
    assert hash_block_tokens(first, [5, 6]) != hash_block_tokens(None, [5, 6])
    assert hash_block_tokens(first, [5, 6]) != hash_block_tokens(first, [6, 5])
    assert hash_block_tokens(first, [5, 6], ("lora-a",)) != hash_block_tokens(first, [5, 6])
    assert hash_block_tokens(first, [5, 6], ("lora-a",)) == hash_block_tokens(
        first, [5, 6], ("lora-a",)
    )
