"""Cascade attention: the reference's argument checks, the dispatcher, and the Triton kernels
at real shapes on the GPU (tiny shapes run in the interpreter: interpreted/test_cascade.py).

A shared-prefix batch is a random paged batch whose sharing rows get the prefix row's first
blocks, as prefix caching lays them out; the oracle is plain paged attention over it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from llmservice.kernels import ops, reference
from llmservice.kernels.paged_batch import PagedBatch, make_paged_batch

CheckFn = Callable[[torch.Tensor, torch.Tensor, float], None]
GPU_TOLERANCE = 1e-2  # 16-bit operands, float32 accumulation (as the other GPU kernel tests)


def shared_prefix_batch(
    seq_lens: Sequence[int],
    sharing: Sequence[int],
    prefix_blocks: int,
    *,
    num_heads: int = 32,
    num_kv_heads: int = 8,
    head_dim: int = 128,
    block_size: int = 16,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    extra_table_columns: int = 0,
) -> PagedBatch:
    batch = make_paged_batch(
        seq_lens,
        [1] * len(seq_lens),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        block_size=block_size,
        dtype=dtype,
        device=device,
        extra_table_columns=extra_table_columns,
        keep_dense=False,
    )
    rows = torch.tensor(list(sharing), device=batch.block_tables.device)
    batch.block_tables[rows, :prefix_blocks] = batch.block_tables[sharing[0], :prefix_blocks]
    return batch


def prefix(blocks: int, row: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """The (prefix_blocks, prefix_row) tensor cascade_attention reads."""
    return torch.tensor([blocks, row], dtype=torch.int32, device=device)


def small_batch() -> PagedBatch:
    return shared_prefix_batch(
        [40, 37, 50], [0, 1, 2], 2, num_heads=4, num_kv_heads=2, head_dim=16, dtype=torch.float32
    )


def test_reference_and_dispatcher_on_the_cpu_compute_paged_attention() -> None:
    batch = small_batch()
    args = batch.attention_args(0.25)
    expected = reference.paged_attention(*args)
    torch.testing.assert_close(reference.cascade_attention(*args, prefix(2)), expected)
    torch.testing.assert_close(ops.cascade_attention(*args, prefix(2, row=1)), expected)


@pytest.mark.parametrize(
    ("prefix_blocks", "prefix_row", "message"),
    [
        (0, 0, "prefix_blocks must be in"),
        (5, 0, "prefix_blocks must be in"),  # wider than the 4-column table
        (2, 3, "prefix_row must be in"),
        (2, -1, "prefix_row must be in"),
    ],
)
def test_cascade_rejects_bad_prefix_arguments(
    prefix_blocks: int, prefix_row: int, message: str
) -> None:
    args = small_batch().attention_args(0.25)
    with pytest.raises(ValueError, match=message):
        reference.cascade_attention(*args, prefix(prefix_blocks, prefix_row))


@pytest.mark.parametrize(
    "bad",
    [
        torch.tensor([2, 0, 0], dtype=torch.int32),
        torch.tensor([2, 0], dtype=torch.int64),
        torch.tensor([[2, 0]], dtype=torch.int32),
    ],
)
def test_cascade_rejects_a_malformed_prefix_tensor(bad: torch.Tensor) -> None:
    args = small_batch().attention_args(0.25)
    with pytest.raises(ValueError, match=r"prefix must be a \(2,\) int32 tensor"):
        reference.cascade_attention(*args, bad)


def test_cascade_rejects_more_than_one_token_per_sequence() -> None:
    batch = make_paged_batch(
        [20, 20],
        [2, 1],
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
        block_size=4,
        dtype=torch.float32,
    )
    with pytest.raises(ValueError, match="one query token per sequence"):
        reference.cascade_attention(*batch.attention_args(1.0), prefix(1))


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("head_dim", "block_size", "num_heads", "num_kv_heads", "prefix_tokens"),
    [
        (128, 16, 32, 8, 1024),  # Llama-3.1-8B
        (64, 32, 8, 1, 512),  # group of 8, larger blocks
        (128, 16, 32, 32, 256),  # no GQA
    ],
)
def test_cascade_kernel_matches_reference_at_real_shapes(
    cuda: torch.device,
    assert_relative_error: CheckFn,
    head_dim: int,
    block_size: int,
    num_heads: int,
    num_kv_heads: int,
    prefix_tokens: int,
) -> None:
    from llmservice.kernels.cascade_attention import cascade_attention

    prefix_blocks = prefix_tokens // block_size
    # 60 sequences with 1..300 tokens after the prefix, and 4 that hold their own blocks.
    seq_lens = [prefix_tokens + 1 + (37 * i) % 300 for i in range(64)]
    sharing = [i for i in range(64) if i % 16]
    batch = shared_prefix_batch(
        seq_lens,
        sharing,
        prefix_blocks,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        block_size=block_size,
        device=cuda,
    )
    args = batch.attention_args(head_dim**-0.5)
    out = cascade_attention(*args, prefix(prefix_blocks, sharing[0], cuda), batch.poisoned_out())
    assert_relative_error(out, reference.paged_attention(*args), GPU_TOLERANCE)


@pytest.mark.gpu
def test_cascade_kernel_with_a_graph_width_table_and_many_splits(
    cuda: torch.device, assert_relative_error: CheckFn
) -> None:
    """Few sequences and a table as wide as max_model_len: many empty splits to merge."""
    from llmservice.kernels.cascade_attention import cascade_attention

    batch = shared_prefix_batch(
        [2100, 2049, 2300, 700, 2200, 2060, 2070, 2080],
        [0, 1, 2, 4, 5, 6, 7],
        128,
        device=cuda,
        extra_table_columns=8000,
    )
    args = batch.attention_args(128**-0.5)
    out = cascade_attention(*args, prefix(128, device=cuda), batch.poisoned_out())
    assert_relative_error(out, reference.paged_attention(*args), GPU_TOLERANCE)
    plain = ops.paged_attention(*args)  # the merge change must keep plain decode right
    assert_relative_error(plain, reference.paged_attention(*args), GPU_TOLERANCE)
