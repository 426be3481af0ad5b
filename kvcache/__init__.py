"""The paged KV-cache manager with hash-based prefix caching (pure: no torch, no I/O)."""

from __future__ import annotations

from llmservice.kvcache.block import KVCacheBlock
from llmservice.kvcache.block_hash import BlockHash, HashFn, hash_block_tokens
from llmservice.kvcache.block_pool import NULL_BLOCK_ID, BlockPool
from llmservice.kvcache.errors import KVCacheIntegrityError
from llmservice.kvcache.free_queue import FreeBlockQueue
from llmservice.kvcache.manager import EMPTY_PREFIX, CachedPrefix, KVCacheManager, KVRequest

__all__ = [
    "EMPTY_PREFIX",
    "NULL_BLOCK_ID",
    "BlockHash",
    "BlockPool",
    "CachedPrefix",
    "FreeBlockQueue",
    "HashFn",
    "KVCacheBlock",
    "KVCacheIntegrityError",
    "KVCacheManager",
    "KVRequest",
    "hash_block_tokens",
]
