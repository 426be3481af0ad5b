"""Chained hashes that name full blocks for prefix caching.

A block's hash covers its parent's hash, its own token ids and the request's extra keys (for
example a LoRA id), so equal hashes mean "same tokens after the same prefix" with overwhelming
probability. The hash is only an index: a hit is always verified against the stored token ids
and the stored parent (see `BlockPool.lookup`), so a collision, accidental or crafted, costs a
cache miss and never a wrong answer.

Python's tuple hash is used because it is fast (about 0.3 µs for 16 tokens) and deterministic
for integers across processes; string extra keys are salted per process, which is harmless since
the cache never leaves its process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

BlockHash = int
"""The chained hash of one full block."""

HashFn = Callable[[BlockHash | None, Sequence[int], tuple[object, ...]], BlockHash]
"""Signature of a block hash function: (parent hash or None, token ids, extra keys) -> hash."""

ROOT_HASH: Final[BlockHash] = 0x6C6C6D73_65727669
"""Stands in for the parent hash of a request's first block."""


def hash_block_tokens(
    parent_hash: BlockHash | None, token_ids: Sequence[int], extra_keys: tuple[object, ...] = ()
) -> BlockHash:
    """Hash one full block given its parent's hash (None for the first block).

    `extra_keys` must be hashable; they separate caches that must not share K/V (e.g. adapters).
    """
    parent = ROOT_HASH if parent_hash is None else parent_hash
    return hash((parent, tuple(token_ids), extra_keys))
