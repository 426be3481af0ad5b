"""One fixed-size block of the paged KV cache, threaded into the free list."""

from __future__ import annotations

from dataclasses import dataclass

from llmservice.kvcache.block_hash import BlockHash


@dataclass(slots=True, eq=False)
class KVCacheBlock:
    """A block of `block_size` token slots: the unit of allocation, sharing and prefix caching.

    A block is either referenced (`ref_cnt >= 1` block tables hold it) or free (`ref_cnt == 0`,
    linked into the free queue). A free block may still be cached: it keeps its hash and content
    description until the pool hands it out again, which evicts it from the cache.
    """

    block_id: int
    # Index of the block in the device KV tensors.
    ref_cnt: int = 0
    # Number of request block tables that hold this block.
    block_hash: BlockHash | None = None
    # Chained hash of the content while the block is in the prefix cache, else None.
    token_ids: tuple[int, ...] | None = None
    # The block's token ids while cached, so that a hash hit is verified, never assumed.
    extra_keys: tuple[object, ...] = ()
    # The owning request's extra keys while cached (verified like the token ids).
    serial: int = 0
    # Unique number of the caching event (0 = not cached). Never reused, so a child can name
    # its parent's content exactly even after the parent block is evicted and reused.
    parent_serial: int = 0
    # `serial` of the cached content of the preceding block (0 for a request's first block).
    prev_free: KVCacheBlock | None = None
    next_free: KVCacheBlock | None = None
    # Links of the free queue; both None while the block is not in it.

    @property
    def is_cached(self) -> bool:
        """Whether the block is in the prefix cache (it may be free or referenced)."""
        return self.serial != 0
