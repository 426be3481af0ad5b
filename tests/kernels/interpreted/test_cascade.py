"""Cascade attention against the reference, in Triton's interpreter (tiny shapes).

Batches come from make_paged_batch with the first `prefix_blocks` table entries of the sharing
rows overwritten by the prefix row's, as prefix caching lays them out. Rows that keep their own
blocks, or whose whole context is the shared blocks, must be attended to on their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch

from llmservice.kernels import cascade_attention, reference
from llmservice.kernels.paged_batch import PagedBatch, make_paged_batch

CheckFn = Callable[[torch.Tensor, torch.Tensor, float], None]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}


@dataclass(frozen=True)
class Case:
    seq_lens: Sequence[int]
    sharing: Sequence[int]  # rows whose tables start with the prefix row's blocks
    prefix_blocks: int
    num_heads: int
    num_kv_heads: int
    block_size: int = 16
    head_dim: int = 32
    dtype: torch.dtype = torch.float32
    prefix_row: int = 0
    num_splits: int | None = None  # suffix splits (None: chosen from the shapes)
    prefix_splits: int | None = None


CASES = {
    "prefix_of_one_block": Case([40, 33, 17, 50], [0, 1, 2, 3], 1, 8, 2, num_splits=2),
    # The shortest sequence keeps a single token of its own after the prefix.
    "all_but_one_token": Case([49, 64, 80], [0, 1, 2], 3, 4, 1),
    # Row 1 has its own blocks; row 4 shares the blocks but its context ends inside them.
    "rows_that_do_not_share": Case([70, 40, 70, 65, 60], [0, 2, 3, 4], 4, 8, 2, num_splits=3),
    "prefix_row_not_first": Case([30, 90, 75, 36], [1, 2, 3], 2, 8, 2, prefix_row=2),
    "block_32_no_gqa_fp16_d64": Case(
        [70, 100, 65], [0, 1, 2], 2, 4, 4, block_size=32, head_dim=64, dtype=torch.float16
    ),
    "group_of_8_prefix_in_pieces": Case([90, 81, 120], [0, 1, 2], 5, 8, 1, prefix_splits=3),
    "group_of_6_many_sequences": Case(
        [40 + 3 * i for i in range(9)], list(range(9)), 2, 6, 1, num_splits=2
    ),
}


def shared_prefix_batch(case: Case, seed: int) -> PagedBatch:
    batch = make_paged_batch(
        case.seq_lens,
        [1] * len(case.seq_lens),
        num_heads=case.num_heads,
        num_kv_heads=case.num_kv_heads,
        head_dim=case.head_dim,
        block_size=case.block_size,
        dtype=case.dtype,
        seed=seed,
        extra_table_columns=1,
    )
    tables = batch.block_tables
    rows = torch.tensor(list(case.sharing))
    tables[rows, : case.prefix_blocks] = tables[case.prefix_row, : case.prefix_blocks]
    return batch


@pytest.mark.parametrize("name", list(CASES))
def test_cascade_matches_reference(assert_relative_error: CheckFn, name: str) -> None:
    case = CASES[name]
    batch = shared_prefix_batch(case, seed=len(name))
    args = batch.attention_args(scale=case.head_dim**-0.5)
    out = cascade_attention.cascade_attention(
        *args,
        torch.tensor([case.prefix_blocks, case.prefix_row], dtype=torch.int32),
        batch.poisoned_out(),
        num_splits=case.num_splits,
        prefix_splits=case.prefix_splits,
    )
    assert_relative_error(out, reference.paged_attention(*args), TOLERANCE[case.dtype])


def test_cascade_with_no_sharing_row_is_plain_attention(assert_relative_error: CheckFn) -> None:
    """Every context ends inside the prefix blocks: nobody shares, only the splits count."""
    case = Case([20, 32, 25], [0, 1, 2], 2, 4, 2)
    batch = shared_prefix_batch(case, seed=3)
    args = batch.attention_args(scale=0.2)
    prefix = torch.tensor([2, 0], dtype=torch.int32)
    out = cascade_attention.cascade_attention(*args, prefix, batch.poisoned_out())
    assert_relative_error(out, reference.paged_attention(*args), TOLERANCE[torch.float32])


def test_one_launch_shape_serves_every_prefix(assert_relative_error: CheckFn) -> None:
    """A captured graph replays one grid with each step's prefix: the same call with prefixes of
    1 to 4 blocks, any row, and out-of-range values (clamped into the table), stays right."""
    case = Case([70, 66, 80, 75], [0, 1, 2, 3], 4, 4, 2)
    batch = shared_prefix_batch(case, seed=11)
    args = batch.attention_args(scale=0.25)
    expected = reference.paged_attention(*args)
    for blocks, row in [(1, 0), (2, 3), (4, 1), (3, 2), (0, 0), (99, 7), (-5, -2)]:
        prefix = torch.tensor([blocks, row], dtype=torch.int32)
        out = cascade_attention.cascade_attention(
            *args, prefix, batch.poisoned_out(), num_splits=2, prefix_splits=3
        )
        assert_relative_error(out, expected, TOLERANCE[torch.float32])
