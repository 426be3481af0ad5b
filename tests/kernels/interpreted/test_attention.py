"""Decode and extend attention kernels against the reference, in Triton's interpreter.

float32 and float16 only: the interpreter's bfloat16 dot is broken (the GPU tests cover bf16).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from llmservice.kernels import decode_attention, extend_attention, reference
from llmservice.kernels.paged_batch import make_paged_batch

CheckFn = Callable[[torch.Tensor, torch.Tensor, float], None]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}


@pytest.mark.parametrize(
    ("dtype", "num_heads", "num_kv_heads", "block_size", "num_splits"),
    [
        (torch.float32, 4, 4, 16, 1),
        (torch.float32, 8, 2, 16, 3),
        (torch.float16, 8, 2, 32, 1),
        (torch.float16, 6, 1, 16, 4),
        (torch.float32, 16, 1, 32, 2),  # 16 query heads per KV head
    ],
)
def test_decode_kernel_matches_reference(
    assert_relative_error: CheckFn,
    dtype: torch.dtype,
    num_heads: int,
    num_kv_heads: int,
    block_size: int,
    num_splits: int,
) -> None:
    seq_lens = [37, 1, 70, 16]
    batch = make_paged_batch(
        seq_lens,
        [1] * len(seq_lens),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=32,
        block_size=block_size,
        dtype=dtype,
        seed=num_heads + num_splits,
        extra_table_columns=1,  # padded tables: splits past the context must be ignored
    )
    args = batch.attention_args(scale=32**-0.5)
    out = decode_attention.paged_attention(
        *args,
        batch.poisoned_out(),
        num_splits=num_splits,
        config=decode_attention.DecodeConfig(block_n=16),
    )
    assert_relative_error(out, reference.paged_attention(*args), TOLERANCE[dtype])


def test_decode_kernel_rejects_more_than_one_token_per_sequence() -> None:
    batch = make_paged_batch(
        [8, 8], [2, 1], num_heads=2, num_kv_heads=1, head_dim=16, block_size=4, dtype=torch.float32
    )
    with pytest.raises(ValueError, match="one query token per sequence"):
        decode_attention.paged_attention(*batch.attention_args(1.0))


EXTEND_CASES = {
    # name: (seq_lens, query_lens, num_heads, num_kv_heads, head_dim, block_size)
    "prefill": ([40, 9], [40, 9], 4, 4, 32, 16),
    "chunk_over_cached_prefix": ([75, 50], [20, 33], 8, 2, 32, 16),
    "mixed_with_decodes": ([30, 1, 64, 17], [1, 1, 29, 17], 8, 2, 32, 32),
    "gqa_group_of_6": ([45, 23], [12, 23], 12, 2, 16, 16),
    "head_dim_64": ([33], [21], 2, 1, 64, 16),
}


@pytest.mark.parametrize("keys", ["from_cache", "new_kv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", list(EXTEND_CASES))
def test_extend_kernel_matches_reference(
    assert_relative_error: CheckFn, case: str, dtype: torch.dtype, keys: str
) -> None:
    seq_lens, query_lens, num_heads, num_kv_heads, head_dim, block_size = EXTEND_CASES[case]
    batch = make_paged_batch(
        seq_lens,
        query_lens,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        block_size=block_size,
        dtype=dtype,
        seed=len(case),
        extra_table_columns=2,
    )
    args = batch.attention_args(scale=head_dim**-0.5)
    expected = reference.paged_attention(*args)
    new_kv = None
    if keys == "new_kv":
        new_kv = batch.key, batch.value
        batch.poison_new_slots()  # the kernel must read the new tokens' K/V from new_kv
    config = extend_attention.default_config(head_dim, batch.query.device, 0, 1)
    out = extend_attention.paged_attention(
        *args, batch.poisoned_out(), new_kv=new_kv, config=config
    )
    assert_relative_error(out, expected, TOLERANCE[dtype])


def test_extend_kernel_reads_new_kv_in_strided_rows(assert_relative_error: CheckFn) -> None:
    """As the model passes them: the keys a packed tensor, the values a column slice of the
    fused QKV projection's output (rows wider than the heads)."""
    batch = make_paged_batch(
        [75, 50, 1], [20, 33, 1], num_heads=8, num_kv_heads=2, head_dim=32, block_size=16,
        dtype=torch.float32, seed=3,
    )  # fmt: skip
    args = batch.attention_args(scale=32**-0.5)
    expected = reference.paged_attention(*args)
    num_tokens = batch.query.shape[0]
    qkv = torch.randn(num_tokens, 8 * 32 + 2 * 2 * 32)
    qkv[:, 8 * 32 + 64 :] = batch.value.reshape(num_tokens, 64)
    value = qkv[:, 8 * 32 + 64 :].view(num_tokens, 2, 32)
    batch.poison_new_slots()
    config = extend_attention.ExtendConfig(block_m=32, block_n=16, num_warps=4, num_stages=1)
    out = extend_attention.paged_attention(
        *args, batch.poisoned_out(), new_kv=(batch.key, value), config=config
    )
    assert_relative_error(out, expected, TOLERANCE[torch.float32])


def test_extend_kernel_rejects_new_kv_of_the_wrong_shape() -> None:
    batch = make_paged_batch(
        [40], [40], num_heads=4, num_kv_heads=2, head_dim=16, block_size=16, dtype=torch.float32
    )
    args = batch.attention_args(scale=0.25)
    with pytest.raises(ValueError, match="new_kv key must be"):
        extend_attention.paged_attention(*args, new_kv=(batch.key[:-1], batch.value))
    with pytest.raises(ValueError, match="new_kv key and value must be"):
        reference.paged_attention(*args, new_kv=(batch.key[:-1], batch.value))


def test_extend_kernel_with_many_tiles_per_sequence(assert_relative_error: CheckFn) -> None:
    """Tiles of 8 tokens x 4 heads over a 60-token chunk: unmasked, diagonal and empty tiles."""
    batch = make_paged_batch(
        [100, 3],
        [60, 3],
        num_heads=4,
        num_kv_heads=1,
        head_dim=16,
        block_size=16,
        dtype=torch.float32,
    )
    args = batch.attention_args(scale=0.25)
    config = extend_attention.ExtendConfig(block_m=32, block_n=32, num_warps=4, num_stages=1)
    out = extend_attention.paged_attention(*args, batch.poisoned_out(), config=config)
    assert_relative_error(out, reference.paged_attention(*args), TOLERANCE[torch.float32])


@pytest.mark.parametrize("keys", ["from_cache", "new_kv"])
def test_extend_kernel_on_the_tail_of_a_batch(assert_relative_error: CheckFn, keys: str) -> None:
    """Given only the sequences after the leading decodes (query_start_loc not starting at 0),
    the extend kernel writes exactly their rows, at their offsets in the whole batch."""
    # 18 decodes: more rows than a 16-token tile, so a tile mapping that ignored the offset
    # would start the tail's tiles inside the decodes' rows.
    num_decodes = 18
    batch = make_paged_batch(
        [9 + 3 * i for i in range(num_decodes)] + [70, 21],
        [1] * num_decodes + [30, 21],
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        block_size=16,
        dtype=torch.float32,
    )
    args = batch.attention_args(scale=0.25)
    expected = reference.paged_attention(*args)
    new_kv = None
    if keys == "new_kv":  # rows indexed like the query's: the whole batch's
        new_kv = batch.key, batch.value
        batch.poison_new_slots()
    query, k_cache, v_cache, tables, seq_lens, starts, scale = args
    out = extend_attention.paged_attention(
        query, k_cache, v_cache, tables[num_decodes:], seq_lens[num_decodes:],
        starts[num_decodes:], scale,
        batch.poisoned_out(),
        new_kv=new_kv,
        config=extend_attention.ExtendConfig(block_m=32, block_n=16, num_warps=4, num_stages=1),
    )  # fmt: skip
    assert torch.isnan(out[:num_decodes]).all()  # the decodes' rows are left alone
    assert_relative_error(out[num_decodes:], expected[num_decodes:], TOLERANCE[torch.float32])


def test_decode_merge_of_more_splits_than_one_merge_iteration(
    assert_relative_error: CheckFn,
) -> None:
    """20 splits of 16 tokens: the merge kernel folds them in two iterations of 16 entries."""
    batch = make_paged_batch(
        [290, 1, 70],
        [1, 1, 1],
        num_heads=8,
        num_kv_heads=2,
        head_dim=32,
        block_size=16,
        dtype=torch.float32,
        extra_table_columns=1,
    )
    args = batch.attention_args(scale=32**-0.5)
    out = decode_attention.paged_attention(
        *args,
        batch.poisoned_out(),
        num_splits=20,
        config=decode_attention.DecodeConfig(block_n=16),
    )
    assert (
        decode_attention.plan_splits(
            3, 2, 20 * 16, torch.device("cpu"), decode_attention.DecodeConfig(block_n=16), 20
        )
        > decode_attention.MERGE_PARTS_BLOCK
    )
    assert_relative_error(out, reference.paged_attention(*args), TOLERANCE[torch.float32])


def test_decode_splits_follow_each_sequences_own_context(assert_relative_error: CheckFn) -> None:
    """A table as wide as a graph's (max_model_len) with short contexts: the splits planned for
    the table's width cut each sequence's own keys instead (runs of at least min_split_tokens),
    so contexts of 1 to 200 tokens use 1 to 7 of the 18 splits."""
    batch = make_paged_batch(
        [200, 1, 70, 33],
        [1, 1, 1, 1],
        num_heads=4,
        num_kv_heads=1,
        head_dim=32,
        block_size=16,
        dtype=torch.float32,
        extra_table_columns=40,
    )
    config = decode_attention.DecodeConfig(block_n=16, min_split_tokens=32, programs_per_sm=10)
    args = batch.attention_args(scale=32**-0.5)
    splits = decode_attention.plan_splits(
        4, 1, batch.block_tables.shape[1] * 16, torch.device("cpu"), config
    )
    assert splits == 18  # far more than any context here needs (7 at most)
    out = decode_attention.paged_attention(*args, batch.poisoned_out(), config=config)
    assert_relative_error(out, reference.paged_attention(*args), TOLERANCE[torch.float32])
