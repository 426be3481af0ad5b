"""The O(1) LRU queue of free blocks: a doubly linked list threaded through the blocks.

The head is evicted first. Freed blocks that hold cached content go to the tail (least recently
used ones leave first); freed blocks without cached content go to the head, because reusing
them costs nothing. Removing a block from the middle (a prefix-cache hit on a free block) is
O(1) because each block carries its own links.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from llmservice.kvcache.block import KVCacheBlock
from llmservice.kvcache.errors import KVCacheIntegrityError


class FreeBlockQueue:
    """Free blocks in eviction order, with O(1) append, appendleft, popleft and remove."""

    def __init__(self, blocks: Iterable[KVCacheBlock] = ()) -> None:
        # Sentinels (block id -1) remove every empty-list special case from the link updates.
        self._head = KVCacheBlock(-1)
        self._tail = KVCacheBlock(-1)
        self._head.next_free = self._tail
        self._tail.prev_free = self._head
        self._len = 0
        for block in blocks:
            self.append(block)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[KVCacheBlock]:
        """Blocks from head (evicted first) to tail."""
        node = self._head.next_free
        while node is not None and node is not self._tail:
            yield node
            node = node.next_free

    def popleft(self) -> KVCacheBlock:
        """Take the block to evict next; IndexError when the queue is empty."""
        first = self._head.next_free
        if first is None or first is self._tail:
            raise IndexError("no free KV-cache block")
        self._unlink(first)
        return first

    def popleft_n(self, n: int) -> list[KVCacheBlock]:
        """Take the `n` blocks to evict next, in order; IndexError if fewer are free."""
        if n > self._len:
            raise IndexError(f"{n} KV-cache blocks requested, {self._len} free")
        return [self.popleft() for _ in range(n)]

    def remove(self, block: KVCacheBlock) -> None:
        """Take `block` out of the queue wherever it is (a hit on a free cached block)."""
        self._unlink(block)

    def append(self, block: KVCacheBlock) -> None:
        """Put `block` at the tail: evicted last."""
        last = self._tail.prev_free
        if last is None:
            raise KVCacheIntegrityError("free queue tail sentinel lost its link")
        self._link(block, last, self._tail)

    def appendleft(self, block: KVCacheBlock) -> None:
        """Put `block` at the head: evicted first."""
        first = self._head.next_free
        if first is None:
            raise KVCacheIntegrityError("free queue head sentinel lost its link")
        self._link(block, self._head, first)

    def check(self) -> None:
        """Raise KVCacheIntegrityError unless the links form one chain of `len(self)` blocks."""
        seen: set[int] = set()
        prev = self._head
        node = self._head.next_free
        while node is not self._tail:
            if node is None or node.prev_free is not prev:
                raise KVCacheIntegrityError(f"free queue broken after block {prev.block_id}")
            if node.block_id in seen or len(seen) > self._len:
                raise KVCacheIntegrityError(f"free queue loops at block {node.block_id}")
            seen.add(node.block_id)
            prev, node = node, node.next_free
        if self._tail.prev_free is not prev or len(seen) != self._len:
            raise KVCacheIntegrityError(
                f"free queue holds {len(seen)} linked blocks but counts {self._len}"
            )

    def _link(self, block: KVCacheBlock, prev: KVCacheBlock, nxt: KVCacheBlock) -> None:
        if block.prev_free is not None or block.next_free is not None:
            raise ValueError(f"block {block.block_id} is already in the free queue")
        block.prev_free, block.next_free = prev, nxt
        prev.next_free = block
        nxt.prev_free = block
        self._len += 1

    def _unlink(self, block: KVCacheBlock) -> None:
        prev, nxt = block.prev_free, block.next_free
        if prev is None or nxt is None:
            raise ValueError(f"block {block.block_id} is not in the free queue")
        prev.next_free = nxt
        nxt.prev_free = prev
        block.prev_free = block.next_free = None
        self._len -= 1
