"""Property test: random admit / compute / grow / free programs against a tiny block pool.

A shadow records, per block, the full token context its slots were computed for. Every prefix
hit must name blocks whose shadow is exactly the new request's prefix (a hit is never stale or
wrong), and `check_integrity()` must pass after every operation.
"""

from __future__ import annotations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from llmservice.kvcache import KVCacheManager
from llmservice.scheduler import Request, RequestLimits

OPS = st.lists(
    st.tuples(
        st.sampled_from(["admit", "compute", "compute", "grow", "free"]),
        st.integers(0, 5),  # which prompt (admit) or which active request
        st.integers(1, 8),  # how many tokens
    ),
    min_size=10,
    max_size=60,
)


@settings(deadline=None, max_examples=300, derandomize=True)
@given(
    block_size=st.sampled_from([1, 2, 3, 4]),
    num_blocks=st.integers(2, 8),
    base=st.lists(st.integers(0, 2), min_size=1, max_size=12),
    cuts=st.lists(st.tuples(st.integers(1, 12), st.integers(0, 3)), min_size=6, max_size=6),
    extra=st.lists(st.sampled_from([(), ("lora",)]), min_size=6, max_size=6),
    ops=OPS,
)
def test_random_programs_keep_the_pool_consistent_and_hits_exact(
    block_size: int,
    num_blocks: int,
    base: list[int],
    cuts: list[tuple[int, int]],
    extra: list[tuple[object, ...]],
    ops: list[tuple[str, int, int]],
) -> None:
    # Prompts are cuts of one base sequence plus a short tail, so prefixes overlap often.
    prompts = [base[:cut] + [7] * tail for cut, tail in cuts]
    kv = KVCacheManager(num_blocks, block_size)
    shadow: dict[int, tuple[object, ...]] = {}  # block id -> (extra keys, *context tokens)
    active: list[Request] = []
    for n, (kind, i, amount) in enumerate(ops):
        # admit: a new request with prompt i; the others act on an active request.
        req = active[i % len(active)] if active else None
        num_cached_before = kv._pool.num_cached_blocks
        if kind == "admit":
            limits = RequestLimits(max_tokens=1)
            req = Request(f"r{n}", prompts[i], limits, extra_keys=extra[i])
            prefix = kv.find_cached_prefix(req)
            assert prefix.num_tokens < req.num_tokens
            for k, block in enumerate(prefix.blocks):
                expected = (req.extra_keys, *req.all_token_ids[: (k + 1) * block_size])
                assert shadow[block.block_id] == expected
            if kv.allocate_slots(req, req.num_tokens - prefix.num_tokens, prefix) is not None:
                req.num_computed_tokens = prefix.num_tokens
                active.append(req)
        elif kind == "compute" and req is not None:
            table = kv.get_block_ids(req.request_id)
            end = min(req.num_computed_tokens + amount, req.num_tokens)
            for pos in range(req.num_computed_tokens, end):
                block_id = table[pos // block_size]
                shadow[block_id] = (req.extra_keys, *req.all_token_ids[: pos + 1])
            req.num_computed_tokens = end
            kv.cache_computed_blocks(req, end)
        elif kind == "grow" and req is not None:
            if kv.allocate_slots(req, req.num_tokens + amount - req.num_computed_tokens):
                for _ in range(amount):
                    req.append_output_token(i % 3)
        elif kind == "free" and req is not None:
            kv.free(req.request_id)
            active.remove(req)
        kv.check_integrity()
        assert 0.0 <= kv.usage <= 1.0
        if kv._pool.num_cached_blocks < num_cached_before:
            event("cached block evicted")
    if kv.prefix_cache_hits:
        event("prefix hit")
    for req in active:
        kv.free(req.request_id)
    kv.check_integrity()
    assert kv.usage == 0.0
    assert kv.prefix_cache_hits <= kv.prefix_cache_queries
