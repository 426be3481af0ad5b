"""The KV-cache manager as the scheduler uses it: block tables, sharing, prefix caching, LRU."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from llmservice.kvcache import (
    NULL_BLOCK_ID,
    BlockHash,
    CachedPrefix,
    KVCacheIntegrityError,
    KVCacheManager,
)
from llmservice.scheduler import Request, RequestLimits


def new_request(request_id: str, tokens: list[int], extra_keys: tuple[object, ...] = ()) -> Request:
    """A request as the scheduler makes them (its Request is the manager's real client)."""
    return Request(request_id, tokens, RequestLimits(max_tokens=1), extra_keys=extra_keys)


def admit(kv: KVCacheManager, req: Request, compute: bool = True) -> CachedPrefix:
    """Admit `req` as the scheduler does: take its cached prefix, allocate the rest, and
    (when `compute`) mark all of its tokens computed and cached."""
    prefix = kv.find_cached_prefix(req)
    block_ids = kv.allocate_slots(req, req.num_tokens - prefix.num_tokens, prefix)
    assert block_ids is not None
    if compute:
        req.num_computed_tokens = req.num_tokens
        kv.cache_computed_blocks(req, req.num_computed_tokens)
    kv.check_integrity()
    return prefix


def test_a_pool_of_n_blocks_has_n_minus_1_usable_and_never_hands_out_block_0() -> None:
    kv = KVCacheManager(num_blocks=5, block_size=4)
    assert kv.num_usable_blocks == kv.num_free_blocks == 4
    req = new_request("a", list(range(16)))
    admit(kv, req)
    assert kv.get_block_ids("a") == (1, 2, 3, 4)
    assert NULL_BLOCK_ID not in kv.get_block_ids("a")
    assert kv.usage == 1.0
    assert not kv.can_allocate(new_request("b", [1]), 1)
    assert kv.allocate_slots(new_request("b", [1]), 1) is None
    kv.free("a")
    assert kv.usage == 0.0
    kv.check_integrity()


def test_constructor_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_blocks must be an int >= 2"):
        KVCacheManager(1)
    with pytest.raises(ValueError, match="block_size must be an int >= 1"):
        KVCacheManager(8, 0)


def test_a_running_request_gets_a_new_block_only_when_its_last_one_is_full() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=4)
    req = new_request("a", list(range(6)))
    assert kv.allocate_slots(req, 6, kv.find_cached_prefix(req)) == (1, 2)
    req.num_computed_tokens = 6
    req.append_output_token(100)
    assert kv.allocate_slots(req, 1) == (1, 2)  # position 6 fits in block 2
    req.num_computed_tokens = 8
    req.append_output_token(101)
    assert kv.allocate_slots(req, 1) == (1, 2, 3)  # position 8 opens block 3
    assert kv.usage == pytest.approx(3 / 7)
    kv.check_integrity()


def test_requests_with_the_same_prefix_share_its_full_blocks() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4)
    a = new_request("a", [*range(10), 50, 51])  # blocks [0..3] [4..7] [8, 9, 50, 51]
    admit(kv, a)
    b = new_request("b", [*range(10), 60, 61, 62])
    prefix = admit(kv, b)
    assert prefix.num_tokens == 8
    assert kv.get_block_ids("b")[:2] == kv.get_block_ids("a")[:2]
    assert kv.get_block_ids("b")[2:] != kv.get_block_ids("a")[2:]
    assert kv.prefix_cache_queries == 12 + 13
    assert kv.prefix_cache_hits == 8
    kv.free("a")
    kv.check_integrity()  # the shared blocks keep one reference
    kv.free("b")
    kv.check_integrity()


def test_a_prefix_hit_never_covers_the_last_token() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4)
    admit(kv, new_request("a", list(range(8))))
    same = new_request("b", list(range(8)))
    assert kv.find_cached_prefix(same).num_tokens == 4  # block 2 is recomputed for the logits
    longer = new_request("c", list(range(9)))
    assert kv.find_cached_prefix(longer).num_tokens == 8


def test_only_computed_full_blocks_become_hits() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4)
    a = new_request("a", list(range(12)))
    admit(kv, a, compute=False)
    assert kv.find_cached_prefix(new_request("x", list(range(13)))).num_tokens == 0
    kv.cache_computed_blocks(a, 7)  # the first chunk computed 7 tokens: one full block
    assert kv.find_cached_prefix(new_request("x", list(range(13)))).num_tokens == 4
    kv.cache_computed_blocks(a, 12)
    assert kv.find_cached_prefix(new_request("x", list(range(13)))).num_tokens == 12


def test_freed_blocks_stay_cached_and_a_hit_revives_them() -> None:
    kv = KVCacheManager(num_blocks=4, block_size=4)  # 3 usable blocks
    admit(kv, new_request("a", list(range(9))))
    a_blocks = kv.get_block_ids("a")
    kv.free("a")
    assert kv.num_free_blocks == 3
    b = new_request("b", list(range(12)))
    prefix = kv.find_cached_prefix(b)
    assert prefix.num_tokens == 8
    # 2 revived hits + 1 new block = the whole pool; one more token would not fit.
    assert kv.can_allocate(b, 4, prefix)
    assert not kv.can_allocate(new_request("b", list(range(13))), 5, prefix)
    admit(kv, b)
    assert kv.get_block_ids("b")[:2] == a_blocks[:2]
    assert kv.num_free_blocks == 0


def test_eviction_is_lru_and_takes_the_tail_of_a_chain_first() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=2)  # 7 usable blocks
    a = new_request("a", [1, 2, 3, 4, 5, 6, 7])  # 3 full blocks + 1 partial
    admit(kv, a)
    b = new_request("b", [9, 9, 8, 8, 7])  # 2 full blocks + 1 partial
    admit(kv, b)
    kv.free("a")
    kv.free("b")
    a_ids, b_ids = [1, 2, 3, 4], [5, 6, 7]
    probe_a = new_request("pa", [1, 2, 3, 4, 5, 6, 0])
    probe_b = new_request("pb", [9, 9, 8, 8, 0])
    assert kv.find_cached_prefix(probe_a).num_tokens == 6
    # The partial blocks hold nothing reusable: they are taken first, then a's chain from
    # its tail (a was freed first, so it is least recently used), then b's.
    order = []
    for i in range(7):
        filler = new_request(f"f{i}", [100 + i])
        admit(kv, filler)
        order.append(kv.get_block_ids(filler.request_id)[0])
    assert order == [b_ids[2], a_ids[3], a_ids[2], a_ids[1], a_ids[0], b_ids[1], b_ids[0]]
    assert kv.find_cached_prefix(probe_a).num_tokens == 0
    assert kv.find_cached_prefix(probe_b).num_tokens == 0


def test_partial_eviction_keeps_the_head_of_a_chain_usable() -> None:
    kv = KVCacheManager(num_blocks=5, block_size=2)  # 4 usable blocks
    admit(kv, new_request("a", [1, 2, 3, 4, 5, 6, 7, 8]))
    kv.free("a")
    admit(kv, new_request("f", [50, 51]))  # evicts a's last block only
    assert kv.find_cached_prefix(new_request("p", [1, 2, 3, 4, 5, 6, 7, 8, 0])).num_tokens == 6


def test_a_hit_on_a_hash_collision_is_verified_not_assumed() -> None:
    # Every block hashes to the same value: only verification keeps the answers right.
    kv = KVCacheManager(num_blocks=16, block_size=2, hash_fn=lambda parent, tokens, extra: 7)
    admit(kv, new_request("a", [1, 2, 3, 4, 5]))
    assert kv.find_cached_prefix(new_request("b", [1, 2, 9, 9, 9])).num_tokens == 2
    assert kv.find_cached_prefix(new_request("c", [2, 1, 3, 4, 5])).num_tokens == 0
    # Block [3, 4] could not be cached under the taken hash, so the chain stops before it.
    assert kv.find_cached_prefix(new_request("d", [1, 2, 3, 4, 5])).num_tokens == 2
    kv.check_integrity()


def test_a_colliding_child_of_a_different_prefix_is_not_a_hit() -> None:
    # Children hash to one value whatever their parent: the parent must be verified too.
    def hash_fn(parent: BlockHash | None, tokens: Sequence[int], extra: tuple[object, ...]) -> int:
        return hash(tuple(tokens)) if parent is None else 1000

    kv = KVCacheManager(num_blocks=16, block_size=2, hash_fn=hash_fn)
    admit(kv, new_request("a", [1, 2, 3, 4, 0]))
    assert kv.find_cached_prefix(new_request("same", [1, 2, 3, 4, 0])).num_tokens == 4
    assert kv.find_cached_prefix(new_request("other", [5, 6, 3, 4, 0])).num_tokens == 0
    admit(kv, new_request("b", [5, 6, 3, 4, 0]))
    assert kv.find_cached_prefix(new_request("other", [5, 6, 3, 4, 0])).num_tokens == 2


def test_extra_keys_separate_caches() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=2)
    admit(kv, new_request("a", [1, 2, 3], extra_keys=("lora-1",)))
    assert kv.find_cached_prefix(new_request("b", [1, 2, 3])).num_tokens == 0
    assert (
        kv.find_cached_prefix(new_request("c", [1, 2, 3], extra_keys=("lora-2",))).num_tokens == 0
    )
    assert (
        kv.find_cached_prefix(new_request("d", [1, 2, 3], extra_keys=("lora-1",))).num_tokens == 2
    )


def test_identical_prompts_computed_side_by_side_keep_one_cached_copy() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=2)
    a, b = new_request("a", [1, 2, 3, 4, 5]), new_request("b", [1, 2, 3, 4, 5])
    admit(kv, a, compute=False)
    admit(kv, b, compute=False)  # admitted in the same step: no hits yet
    for req in (a, b):
        req.num_computed_tokens = 5
        kv.cache_computed_blocks(req, 5)
    kv.check_integrity()
    kv.free("a")
    prefix = kv.find_cached_prefix(new_request("c", [1, 2, 3, 4, 5]))
    assert prefix.num_tokens == 4
    # a's blocks hold the cached copy; b's equal blocks stayed uncached.
    assert tuple(b.block_id for b in prefix.blocks) == (1, 2)
    assert kv.get_block_ids("b") == (4, 5, 6)


def test_caching_disabled_never_hits_and_counts_nothing() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=2, enable_prefix_caching=False)
    admit(kv, new_request("a", [1, 2, 3, 4, 5]))
    assert kv.find_cached_prefix(new_request("b", [1, 2, 3, 4, 5])).num_tokens == 0
    assert kv.prefix_cache_queries == kv.prefix_cache_hits == 0


def test_a_stale_prefix_is_refused() -> None:
    kv = KVCacheManager(num_blocks=3, block_size=2)  # 2 usable blocks
    admit(kv, new_request("a", [1, 2, 3]))
    kv.free("a")
    late = new_request("late", [1, 2, 0])
    prefix = kv.find_cached_prefix(late)
    assert prefix.num_tokens == 2
    admit(kv, new_request("f", [7, 7, 7]))  # evicts the cached block behind the prefix's back
    kv.free("f")
    with pytest.raises(ValueError, match="stale"):
        kv.allocate_slots(late, 1, prefix)


def test_misuse_is_refused() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=2)
    a = new_request("a", [1, 2, 3])
    admit(kv, a)
    with pytest.raises(ValueError, match="already holds blocks"):
        kv.allocate_slots(a, 1, kv.find_cached_prefix(a))
    with pytest.raises(ValueError, match="num_new_tokens must be >= 0"):
        kv.can_allocate(a, -1)
    with pytest.raises(ValueError, match="computed tokens but holds no blocks"):
        b = new_request("b", [1, 2])
        b.num_computed_tokens = 1
        kv.allocate_slots(b, 1)
    kv.free("a")
    kv.free("a")  # freeing twice is a no-op
    kv.check_integrity()


def test_check_integrity_catches_a_wrong_ref_count() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=2)
    admit(kv, new_request("a", [1, 2, 3]))
    kv._pool.blocks[1].ref_cnt += 1
    with pytest.raises(KVCacheIntegrityError, match="block 1 has ref_cnt 2 but 1 tables hold it"):
        kv.check_integrity()


def test_check_integrity_catches_a_referenced_block_in_the_free_queue() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=2)
    admit(kv, new_request("a", [1, 2, 3]))
    kv._pool.free_queue.append(kv._pool.blocks[1])
    with pytest.raises(KVCacheIntegrityError, match="block 1 has ref_cnt 1 but is in the free"):
        kv.check_integrity()


def test_check_integrity_catches_a_hash_pointing_to_a_reused_block() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=2)
    admit(kv, new_request("a", [1, 2, 3]))
    block = kv._pool.blocks[1]
    assert block.is_cached
    # Simulate reuse without eviction: the block's content is cleared but the map still has it.
    block.block_hash, block.token_ids, block.serial = None, None, 0
    with pytest.raises(KVCacheIntegrityError, match="cache map has 1 entries but 0 blocks"):
        kv.check_integrity()


def test_check_integrity_catches_a_null_block_handed_out() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=2)
    kv._pool.blocks[0].ref_cnt = 1
    with pytest.raises(KVCacheIntegrityError, match="null block"):
        kv.check_integrity()


def test_check_integrity_catches_a_block_held_twice_by_one_table() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=2)
    admit(kv, new_request("a", [1, 2, 3]))
    table = kv._tables["a"]
    table.blocks[1] = table.blocks[0]
    with pytest.raises(KVCacheIntegrityError, match="holds a block twice"):
        kv.check_integrity()
