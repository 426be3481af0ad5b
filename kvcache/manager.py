"""The KV-cache manager: per-request block tables over one block pool, with prefix caching.

This is the only interface the scheduler uses. It answers "can these tokens get slots?",
allocates and frees block tables, finds a request's cached prefix and caches the full blocks a
request has computed. All counts of tokens are in tokens; all queries are O(1) except the
prefix lookup at admission (O(prompt blocks)) and `check_integrity()` (O(pool), for tests).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from llmservice.kvcache.block import KVCacheBlock
from llmservice.kvcache.block_hash import BlockHash, HashFn, hash_block_tokens
from llmservice.kvcache.block_pool import BlockPool
from llmservice.kvcache.errors import KVCacheIntegrityError


class KVRequest(Protocol):
    """What the manager reads of a request (the scheduler's `Request` satisfies it)."""

    @property
    def request_id(self) -> str: ...
    @property
    def num_computed_tokens(self) -> int: ...
    @property
    def num_tokens(self) -> int: ...
    @property
    def all_token_ids(self) -> Sequence[int]: ...
    @property
    def extra_keys(self) -> tuple[object, ...]: ...
    @property
    def block_hashes(self) -> list[BlockHash]:
        """Chained hashes of the request's full blocks; the manager extends it lazily."""
        ...


@dataclass(frozen=True, slots=True)
class CachedPrefix:
    """The verified cached blocks at the start of a request, found at admission."""

    blocks: tuple[KVCacheBlock, ...]
    """The cached blocks, in order."""
    serials: tuple[int, ...]
    """Their serials when found, so a stale prefix is refused instead of silently reused."""
    num_tokens: int
    """Tokens the prefix covers (a multiple of the block size)."""


EMPTY_PREFIX = CachedPrefix((), (), 0)
_NEVER = sys.maxsize  # a `next_cache_end` that no request reaches


@dataclass(slots=True)
class _Table:
    """One request's block table and how far its full blocks have been cached."""

    blocks: list[KVCacheBlock]
    block_ids: tuple[int, ...]
    num_slots: int  # len(blocks) * block_size
    next_cache_end: int  # computed tokens at which the next full block can be cached
    num_cached_blocks: int = 0  # leading blocks whose content the cache holds (maybe elsewhere)
    last_serial: int = 0  # serial naming the content of block num_cached_blocks - 1


class KVCacheManager:
    """Block tables of all running requests over a pool of `num_blocks` blocks.

    Block 0 is the reserved null block, so `num_blocks - 1` blocks are usable.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int = 16,
        enable_prefix_caching: bool = True,
        *,
        hash_fn: HashFn = hash_block_tokens,
    ) -> None:
        # hash_fn exists so that tests can force collisions and see them verified.
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 2:
            raise ValueError(
                f"num_blocks must be an int >= 2 (block 0 is reserved), got {num_blocks!r}"
            )
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.prefix_cache_queries = 0
        """Tokens of admitted requests looked up in the prefix cache."""
        self.prefix_cache_hits = 0
        """Of those, tokens served from the cache."""
        self._hash_fn = hash_fn
        self._pool = BlockPool(num_blocks)
        self._tables: dict[str, _Table] = {}

    @property
    def num_usable_blocks(self) -> int:
        """Blocks that can ever be allocated (all but the null block)."""
        return self.num_blocks - 1

    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be allocated now (free blocks, cached or not)."""
        return self._pool.num_free_blocks

    @property
    def usage(self) -> float:
        """Fraction (0..1) of usable blocks held by requests."""
        return 1.0 - self._pool.num_free_blocks / self.num_usable_blocks

    def get_block_ids(self, request_id: str) -> tuple[int, ...]:
        """The request's block table (empty if it holds no blocks)."""
        table = self._tables.get(request_id)
        return table.block_ids if table is not None else ()

    def find_cached_prefix(self, request: KVRequest) -> CachedPrefix:
        """The longest verified run of cached full blocks at the start of the request's tokens.

        It never covers the last token: that one must be computed to give the next logits.
        No side effects besides extending `request.block_hashes`; counted on admission.
        """
        if not self.enable_prefix_caching:
            return EMPTY_PREFIX
        bs = self.block_size
        max_blocks = (request.num_tokens - 1) // bs
        if max_blocks <= 0:
            return EMPTY_PREFIX
        hashes = self._block_hashes(request, max_blocks)
        tokens = request.all_token_ids
        extra_keys = request.extra_keys
        blocks: list[KVCacheBlock] = []
        parent_serial = 0
        for i in range(max_blocks):
            block = self._pool.lookup(
                hashes[i], tuple(tokens[i * bs : (i + 1) * bs]), extra_keys, parent_serial
            )
            if block is None:
                break
            blocks.append(block)
            parent_serial = block.serial
        if not blocks:
            return EMPTY_PREFIX
        return CachedPrefix(tuple(blocks), tuple(b.serial for b in blocks), len(blocks) * bs)

    def can_allocate(
        self, request: KVRequest, num_new_tokens: int, prefix: CachedPrefix | None = None
    ) -> bool:
        """Whether `allocate_slots` with the same arguments would succeed now."""
        return self._num_blocks_short(request, num_new_tokens, prefix) <= 0

    def allocate_slots(
        self,
        request: KVRequest,
        num_new_tokens: int,
        prefix: CachedPrefix | None = None,
        keep_free: int = 0,
    ) -> tuple[int, ...] | None:
        """Grow the request's table to hold its computed tokens plus `num_new_tokens`.

        On admission (the request holds no blocks yet) `prefix` is its cached prefix from
        `find_cached_prefix`; those blocks are shared and the tokens after them get new blocks.
        Returns the whole block table, or None (nothing changed) if the free blocks do not
        suffice, or would leave fewer than `keep_free` free blocks (the scheduler's headroom).
        """
        table = self._tables.get(request.request_id)
        if table is not None and prefix is None:
            # Hot path: a running request; most decode steps need no new block.
            num_tokens = request.num_computed_tokens + num_new_tokens
            if num_tokens <= table.num_slots:
                return table.block_ids
            need = self._cdiv(num_tokens) - len(table.blocks)
            if need + keep_free > self._pool.num_free_blocks:
                return None
            new_blocks = self._pool.allocate(need)
            table.blocks += new_blocks
            table.block_ids += tuple([b.block_id for b in new_blocks])
            table.num_slots = len(table.blocks) * self.block_size
            return table.block_ids
        if self._num_blocks_short(request, num_new_tokens, prefix) + keep_free > 0:
            return None
        prefix = prefix or EMPTY_PREFIX
        self._pool.touch(prefix.blocks)
        need = self._cdiv(prefix.num_tokens + num_new_tokens) - len(prefix.blocks)
        blocks = [*prefix.blocks, *self._pool.allocate(need)]
        num_cached = len(prefix.blocks)
        table = _Table(
            blocks,
            tuple([b.block_id for b in blocks]),
            num_slots=len(blocks) * self.block_size,
            next_cache_end=(num_cached + 1) * self.block_size
            if self.enable_prefix_caching
            else _NEVER,
            num_cached_blocks=num_cached,
            last_serial=prefix.blocks[-1].serial if num_cached else 0,
        )
        self._tables[request.request_id] = table
        if self.enable_prefix_caching:
            self.prefix_cache_queries += request.num_tokens
            self.prefix_cache_hits += prefix.num_tokens
        return table.block_ids

    def cache_computed_blocks(self, request: KVRequest, num_computed_tokens: int) -> None:
        """Cache the request's full blocks among its first `num_computed_tokens` tokens.

        Call it once those tokens' K/V is really computed (after the model ran), never before.
        """
        table = self._tables.get(request.request_id)
        if table is None or num_computed_tokens < table.next_cache_end:
            return  # hot path: no block became full (or caching is off or stopped)
        bs = self.block_size
        num_full = min(num_computed_tokens // bs, len(table.blocks))
        hashes = self._block_hashes(request, num_full)
        tokens = request.all_token_ids
        extra_keys = request.extra_keys
        for i in range(table.num_cached_blocks, num_full):
            serial = self._pool.cache(
                table.blocks[i],
                hashes[i],
                tuple(tokens[i * bs : (i + 1) * bs]),
                extra_keys,
                table.last_serial,
            )
            if serial == 0:
                table.next_cache_end = _NEVER  # the verified chain is broken here
                return
            table.last_serial = serial
            table.num_cached_blocks = i + 1
        table.next_cache_end = (table.num_cached_blocks + 1) * bs

    def free(self, request_id: str) -> None:
        """Release the request's blocks (no-op if it holds none).

        The table is released tail first, so the deepest blocks of a chain are evicted first.
        """
        table = self._tables.pop(request_id, None)
        if table is not None:
            self._pool.free(reversed(table.blocks))

    def check_integrity(self) -> None:
        """Raise KVCacheIntegrityError unless every block is free xor referenced, ref counts
        equal the number of tables holding each block, and the cache map only names cached
        blocks with their current content."""
        self._pool.check_integrity(self.block_size)
        refs = [0] * self.num_blocks
        for request_id, table in self._tables.items():
            if len({b.block_id for b in table.blocks}) != len(table.blocks):
                raise KVCacheIntegrityError(f"request {request_id!r} holds a block twice")
            if table.block_ids != tuple(b.block_id for b in table.blocks):
                raise KVCacheIntegrityError(f"request {request_id!r} has stale block ids")
            if table.num_slots != len(table.blocks) * self.block_size:
                raise KVCacheIntegrityError(f"request {request_id!r} miscounts its slots")
            if table.num_cached_blocks > len(table.blocks):
                raise KVCacheIntegrityError(f"request {request_id!r} caches missing blocks")
            for block in table.blocks:
                refs[block.block_id] += 1
        for block in self._pool.blocks:
            if block.ref_cnt != refs[block.block_id]:
                raise KVCacheIntegrityError(
                    f"block {block.block_id} has ref_cnt {block.ref_cnt} "
                    f"but {refs[block.block_id]} tables hold it"
                )

    def _num_blocks_short(
        self, request: KVRequest, num_new_tokens: int, prefix: CachedPrefix | None
    ) -> int:
        """How many more free blocks the allocation needs than there are (<= 0: it fits)."""
        if num_new_tokens < 0:
            raise ValueError(f"num_new_tokens must be >= 0, got {num_new_tokens}")
        table = self._tables.get(request.request_id)
        if table is not None:
            if prefix is not None:
                raise ValueError(f"request {request.request_id!r} already holds blocks")
            need = self._cdiv(request.num_computed_tokens + num_new_tokens) - len(table.blocks)
            return need - self._pool.num_free_blocks
        if request.num_computed_tokens != 0:
            raise ValueError(
                f"request {request.request_id!r} has computed tokens but holds no blocks"
            )
        prefix = prefix or EMPTY_PREFIX
        for block, serial in zip(prefix.blocks, prefix.serials, strict=True):
            if block.serial != serial:
                raise ValueError("the cached prefix is stale: look it up again before allocating")
        # Hits on free cached blocks take them out of the free queue, so they count as used.
        revived = sum(1 for b in prefix.blocks if b.ref_cnt == 0)
        need = self._cdiv(prefix.num_tokens + num_new_tokens) - len(prefix.blocks)
        return need + revived - self._pool.num_free_blocks

    def _block_hashes(self, request: KVRequest, num_blocks: int) -> list[BlockHash]:
        """The request's chained block hashes, extended to at least `num_blocks` entries."""
        hashes = request.block_hashes
        if len(hashes) < num_blocks:
            bs = self.block_size
            tokens = request.all_token_ids
            parent = hashes[-1] if hashes else None
            for i in range(len(hashes), num_blocks):
                parent = self._hash_fn(parent, tokens[i * bs : (i + 1) * bs], request.extra_keys)
                hashes.append(parent)
        return hashes

    def _cdiv(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)
