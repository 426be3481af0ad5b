"""The block pool: every block, their reference counts, the free queue and the prefix-cache map.

Block 0 is the reserved null block: never handed out, never freed, never cached (the model
runner pads block tables with it). A block leaves the cache only when the pool hands it out for
new content; until then a free cached block can be revived by a hit.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmservice.kvcache.block import KVCacheBlock
from llmservice.kvcache.block_hash import BlockHash
from llmservice.kvcache.errors import KVCacheIntegrityError
from llmservice.kvcache.free_queue import FreeBlockQueue

NULL_BLOCK_ID = 0
"""The reserved padding block."""


class BlockPool:
    """Allocates, shares, frees and caches the blocks of one KV cache."""

    def __init__(self, num_blocks: int) -> None:
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.null_block = self.blocks[NULL_BLOCK_ID]
        self.free_queue = FreeBlockQueue(self.blocks[NULL_BLOCK_ID + 1 :])
        self._cached: dict[BlockHash, KVCacheBlock] = {}
        self._next_serial = 1

    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be handed out now (free ones, cached or not)."""
        return len(self.free_queue)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks whose content is in the prefix cache (free or referenced)."""
        return len(self._cached)

    def allocate(self, n: int) -> list[KVCacheBlock]:
        """Hand out `n` blocks with ref_cnt 1, evicting their cached content; IndexError if short."""
        blocks = self.free_queue.popleft_n(n)
        for block in blocks:
            if block.serial:
                self._evict(block)
            block.ref_cnt = 1
        return blocks

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Add a reference to cached blocks that a new request reuses (taking free ones back)."""
        for block in blocks:
            if block.ref_cnt == 0:
                self.free_queue.remove(block)
            block.ref_cnt += 1

    def free(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference from each block, in the order given (the first is evicted first)."""
        for block in blocks:
            if block.ref_cnt <= 0:
                raise ValueError(f"block {block.block_id} freed more often than referenced")
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                if block.serial:
                    self.free_queue.append(block)
                else:
                    self.free_queue.appendleft(block)

    def lookup(
        self,
        block_hash: BlockHash,
        token_ids: tuple[int, ...],
        extra_keys: tuple[object, ...],
        parent_serial: int,
    ) -> KVCacheBlock | None:
        """The cached block with exactly this content after exactly this parent, or None.

        The hash only finds the candidate; its token ids, extra keys and parent are compared.
        """
        block = self._cached.get(block_hash)
        if (
            block is None
            or block.parent_serial != parent_serial
            or block.token_ids != token_ids
            or block.extra_keys != extra_keys
        ):
            return None
        return block

    def cache(
        self,
        block: KVCacheBlock,
        block_hash: BlockHash,
        token_ids: tuple[int, ...],
        extra_keys: tuple[object, ...],
        parent_serial: int,
    ) -> int:
        """Put a referenced, fully computed block into the prefix cache.

        Returns the serial that now names this content: the block's new serial, or the serial
        of an identical block cached earlier (the new block then stays uncached). Returns 0 when
        a different content holds the hash (a collision): the caller's chain cannot go on.
        """
        if block.ref_cnt <= 0 or block.serial or block is self.null_block:
            raise ValueError(f"block {block.block_id} cannot be cached in its state")
        existing = self._cached.get(block_hash)
        if existing is not None:
            same = self.lookup(block_hash, token_ids, extra_keys, parent_serial) is existing
            return existing.serial if same else 0
        block.block_hash = block_hash
        block.token_ids = token_ids
        block.extra_keys = extra_keys
        block.parent_serial = parent_serial
        block.serial = self._next_serial
        self._next_serial += 1
        self._cached[block_hash] = block
        return block.serial

    def _evict(self, block: KVCacheBlock) -> None:
        if block.block_hash is not None and self._cached.get(block.block_hash) is block:
            del self._cached[block.block_hash]
        block.block_hash = None
        block.token_ids = None
        block.extra_keys = ()
        block.serial = block.parent_serial = 0

    def check_integrity(self, block_size: int) -> None:
        """Raise KVCacheIntegrityError unless free queue, ref counts and cache map agree."""
        null = self.null_block
        if null.ref_cnt or null.serial or null.prev_free is not None or null.next_free is not None:
            raise KVCacheIntegrityError("the null block was allocated, cached or freed")
        self.free_queue.check()
        free_ids = {block.block_id for block in self.free_queue}
        serials: set[int] = set()
        for block in self.blocks[NULL_BLOCK_ID + 1 :]:
            if block.ref_cnt < 0:
                raise KVCacheIntegrityError(f"block {block.block_id} has ref_cnt {block.ref_cnt}")
            if (block.ref_cnt == 0) != (block.block_id in free_ids):
                raise KVCacheIntegrityError(
                    f"block {block.block_id} has ref_cnt {block.ref_cnt} but is "
                    f"{'' if block.block_id in free_ids else 'not '}in the free queue"
                )
            if block.serial:
                self._check_cached(block, block_size, serials)
            elif block.block_hash is not None or block.token_ids is not None:
                raise KVCacheIntegrityError(f"uncached block {block.block_id} keeps cache fields")
        if len(serials) != len(self._cached):
            raise KVCacheIntegrityError(
                f"cache map has {len(self._cached)} entries but {len(serials)} blocks are cached"
            )

    def _check_cached(self, block: KVCacheBlock, block_size: int, serials: set[int]) -> None:
        if block.block_hash is None or self._cached.get(block.block_hash) is not block:
            raise KVCacheIntegrityError(
                f"cached block {block.block_id} is not what the cache map holds for its hash"
            )
        if block.token_ids is None or len(block.token_ids) != block_size:
            raise KVCacheIntegrityError(f"cached block {block.block_id} is not a full block")
        if block.serial in serials or not block.parent_serial < block.serial < self._next_serial:
            raise KVCacheIntegrityError(f"cached block {block.block_id} has a stale serial")
        serials.add(block.serial)
