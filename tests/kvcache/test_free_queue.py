"""The O(1) LRU free queue of blocks."""

from __future__ import annotations

import pytest

from llmservice.kvcache import FreeBlockQueue, KVCacheBlock, KVCacheIntegrityError


def _blocks(n: int) -> list[KVCacheBlock]:
    return [KVCacheBlock(i) for i in range(n)]


def _ids(queue: FreeBlockQueue) -> list[int]:
    return [b.block_id for b in queue]


def test_blocks_leave_in_the_order_they_were_appended() -> None:
    blocks = _blocks(4)
    queue = FreeBlockQueue(blocks)
    assert len(queue) == 4
    assert [queue.popleft().block_id for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(IndexError):
        queue.popleft()


def test_appendleft_puts_a_block_first_in_line_for_eviction() -> None:
    blocks = _blocks(3)
    queue = FreeBlockQueue(blocks[:2])
    queue.appendleft(blocks[2])
    assert _ids(queue) == [2, 0, 1]


def test_remove_takes_a_block_out_of_the_middle_and_keeps_the_links() -> None:
    blocks = _blocks(5)
    queue = FreeBlockQueue(blocks)
    queue.remove(blocks[2])
    queue.remove(blocks[0])
    queue.remove(blocks[4])
    assert _ids(queue) == [1, 3]
    assert blocks[2].prev_free is None and blocks[2].next_free is None
    queue.check()
    queue.append(blocks[2])
    assert _ids(queue) == [1, 3, 2]
    assert [b.block_id for b in queue.popleft_n(3)] == [1, 3, 2]
    assert len(queue) == 0
    queue.check()


def test_misuse_is_refused() -> None:
    blocks = _blocks(2)
    queue = FreeBlockQueue(blocks[:1])
    with pytest.raises(ValueError, match="already in the free queue"):
        queue.append(blocks[0])
    with pytest.raises(ValueError, match="not in the free queue"):
        queue.remove(blocks[1])
    with pytest.raises(IndexError, match="2 KV-cache blocks requested, 1 free"):
        queue.popleft_n(2)
    assert len(queue) == 1


def test_check_finds_broken_links() -> None:
    blocks = _blocks(3)
    queue = FreeBlockQueue(blocks)
    blocks[1].prev_free = blocks[2]  # corrupt a back link
    with pytest.raises(KVCacheIntegrityError, match="broken"):
        queue.check()


def test_check_finds_a_miscount() -> None:
    blocks = _blocks(3)
    queue = FreeBlockQueue(blocks)
    # Unlink the middle block by hand, behind the queue's back.
    blocks[0].next_free, blocks[2].prev_free = blocks[2], blocks[0]
    with pytest.raises(KVCacheIntegrityError, match="2 linked blocks but counts 3"):
        queue.check()
