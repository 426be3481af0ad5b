"""Cascade ("shared prefix") attention for decode batches whose block tables share leading blocks.

With prefix caching, sequences that start with the same prompt hold the same physical blocks
for it, and plain decode attention reads those blocks once per sequence in every step. Here
they are read once per step for all sequences:

1. The prefix kernel attends every sharing sequence's query (all query heads of one KV head,
   rows = sequences x group) to the shared blocks: a dense, GEMM-like problem. It writes a
   normalized partial output and its log-sum-exp (log2 domain) per row, and each sequence's
   context start (the prefix length where it shares, else 0).
2. The decode split kernel (decode_attention.py) attends each sequence to its keys from its
   context start on: its own suffix, or everything for a sequence that does not share.
3. The decode merge kernel combines the split entries and the prefix entries by their LSE.

The shared prefix is `block_tables[prefix_row, :prefix_blocks]`, and both numbers are read from
a device tensor, so one CUDA graph serves every prefix (the runner replays captured cascade
steps with each step's values). Which sequences share it is decided on the device (their first
`prefix_blocks` table entries equal the prefix row's and their context goes past the prefix), so
a caller's wrong guess costs speed, never correctness, and the host needs no sync. The launch
grid depends on shapes alone: the prefix is cut into a fixed number of pieces whose length the
kernel derives from the prefix length (pieces past it are empty). Three launches instead of one
or two: worth it when many sequences share a long prefix (the runner's policy: model_inputs.py).
"""

# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: @triton.jit is untyped and reads its parameters' annotations itself.)

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from llmservice.kernels.decode_attention import (
    DecodeConfig,
    empty_parts,
    launch_merge_kernel,
    launch_split_kernel,
    plan_splits,
    split_floor,
)

# The extend kernel's inner loop (online softmax over a run of one table's keys) serves the
# prefix kernel unchanged: its rows are queries of many sequences instead of one.
from llmservice.kernels.extend_attention import FROM_CACHE, ExtendConfig, _attend_keys
from llmservice.kernels.reference import check_cascade_prefix
from llmservice.kernels.triton_utils import (
    LOG2E,
    cdiv,
    check_paged_attention_args,
    dot_precision,
    next_power_of_2,
    num_sms,
)


@dataclass(frozen=True)
class CascadeConfig:
    """Launch parameters of the prefix kernel, and the decode config of the suffix part."""

    tiles: ExtendConfig = field(
        default_factory=lambda: ExtendConfig(block_m=64, block_n=64, num_warps=4, num_stages=3)
    )
    """The prefix kernel's tiles; its rows are sequences x query heads per KV head (the best
    of five tried at W4's shape on an H100: 0.235 ms vs 0.256-0.333 ms)."""
    programs_per_sm: int = 1
    """Target prefix programs per SM when choosing how many pieces the prefix is cut into."""
    min_piece_tokens: int = 512
    """A prefix piece never covers fewer tokens than this (each adds an entry to merge)."""
    compare_blocks: int = 16
    """Table entries compared per iteration when finding the sharing sequences."""
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    """The split kernel's parameters for the suffixes."""


def default_config(device: torch.device) -> CascadeConfig:
    """The GPU defaults; small tiles for Triton's interpreter (it runs them with numpy)."""
    if device.type != "cuda":
        return CascadeConfig(
            tiles=ExtendConfig(block_m=16, block_n=16, num_warps=4, num_stages=1),
            min_piece_tokens=16,
            decode=DecodeConfig(block_n=16, num_stages=1),
        )
    return CascadeConfig()


# NOTE: arguments that vary from step to step are not specialized on (Triton would compile a
# variant per divisibility by 16 or value 1), so a new batch shape compiles nothing mid-serving.
@triton.jit(
    do_not_specialize=[
        "num_seqs",
        "max_prefix_blocks",
        "min_piece_tokens",
        "first_part",
        "num_parts",
        "block_tables_stride",
    ]
)
def _prefix_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    context_starts_ptr,  # (num_seqs,) int32, written: prefix length where a sequence shares, else 0
    part_out_ptr,  # (num_seqs, num_heads, num_parts, head_dim) float32
    part_lse_ptr,  # (num_seqs, num_heads, num_parts) float32, log2 domain; -inf = empty
    prefix_ptr,  # (2,) int32: prefix_blocks, then the row whose first blocks are the prefix
    qk_scale,  # softmax scale * log2(e)
    num_seqs,
    num_heads,
    max_prefix_blocks,  # the table width: prefix_blocks is clamped to [0, this]
    min_piece_tokens,  # a multiple of BLOCK_N: the shortest piece worth a program
    first_part,  # entry of prefix piece 0 (the split kernel's entries come first)
    num_parts,
    q_stride_t,
    q_stride_h,
    cache_stride_b,
    cache_stride_s,
    cache_stride_h,
    block_tables_stride,
    BLOCK_SIZE: tl.constexpr,
    GROUP: tl.constexpr,  # query heads per KV head
    GROUP_PAD: tl.constexpr,  # GROUP rounded up to a power of two
    BLOCK_M: tl.constexpr,  # rows per program, a multiple of GROUP_PAD
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    COMPARE_BLOCKS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    seq = tile * (BLOCK_M // GROUP_PAD) + offs_m // GROUP_PAD  # (BLOCK_M,)
    group_idx = offs_m % GROUP_PAD
    head = kv_head * GROUP + group_idx
    in_batch = seq < num_seqs
    # Clamped, so any values stay inside the tables (the runner checks them on the host).
    prefix_blocks = tl.minimum(tl.maximum(tl.load(prefix_ptr), 0), max_prefix_blocks)
    prefix_row = tl.minimum(tl.maximum(tl.load(prefix_ptr + 1), 0), num_seqs - 1)
    prefix_len = prefix_blocks * BLOCK_SIZE
    # Grid axis 2 cuts the prefix into equal runs of whole BLOCK_N tiles, none shorter than
    # min_piece_tokens; the pieces past the prefix are empty.
    piece = tl.cdiv(tl.cdiv(prefix_len, tl.num_programs(2)), BLOCK_N) * BLOCK_N
    tokens_per_split = tl.maximum(piece, min_piece_tokens)

    # A sequence shares when its table starts with the prefix row's blocks and its context
    # goes past them (its new token's key is its own).
    prefix_table = block_tables_ptr + prefix_row.to(tl.int64) * block_tables_stride
    rows = block_tables_ptr + seq.to(tl.int64) * block_tables_stride  # (BLOCK_M,)
    mismatches = tl.zeros([BLOCK_M], tl.int32)
    for c0 in range(0, prefix_blocks, COMPARE_BLOCKS):
        cols = c0 + tl.arange(0, COMPARE_BLOCKS)
        col_ok = cols < prefix_blocks
        mine = tl.load(
            rows[:, None] + cols[None, :], mask=in_batch[:, None] & col_ok[None, :], other=0
        )  # (BLOCK_M, COMPARE_BLOCKS)
        wanted = tl.load(prefix_table + cols, mask=col_ok, other=0)
        mismatches += tl.sum((mine != wanted[None, :]).to(tl.int32), 1)
    seq_len = tl.load(seq_lens_ptr + seq, mask=in_batch, other=0)
    shares = in_batch & (mismatches == 0) & (seq_len > prefix_len)
    if (kv_head == 0) & (split == 0):
        starts = tl.where(shares, prefix_len, 0)
        tl.store(context_starts_ptr + seq, starts, mask=in_batch & (group_idx == 0))

    head_ok = in_batch & (group_idx < GROUP)
    row_ok = shares & (group_idx < GROUP)
    part = (seq * num_heads + head) * num_parts + first_part + split  # (BLOCK_M,)
    lo = split * tokens_per_split
    hi = tl.minimum(lo + tokens_per_split, prefix_len)
    if lo >= hi:  # a piece past the prefix (rounding): empty for every row
        tl.store(part_lse_ptr + part, tl.full([BLOCK_M], float("-inf"), tl.float32), head_ok)
        return

    token = tl.load(query_start_loc_ptr + seq, mask=in_batch, other=0)
    q_rows = token * q_stride_t + head * q_stride_h
    # Rows that do not share load zeros: finite scores, no NaN; their results are dropped.
    q = tl.load(q_ptr + q_rows[:, None] + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    kv_offset = kv_head * cache_stride_h
    q_pos = tl.full([BLOCK_M], 0, tl.int32) + hi - 1  # every row sees every prefix key
    unmasked_end = lo + (hi - lo) // BLOCK_N * BLOCK_N
    acc, l_i, m_i = _attend_keys(
        acc, l_i, m_i, q, q_pos, lo, unmasked_end, qk_scale,
        k_cache_ptr, v_cache_ptr, k_cache_ptr, v_cache_ptr, prefix_table, 0, kv_offset,
        cache_stride_s, cache_stride_s, cache_stride_b,
        BLOCK_SIZE, HEAD_DIM, BLOCK_N, FROM_CACHE, False, DOT_PRECISION,
    )  # fmt: skip
    acc, l_i, m_i = _attend_keys(
        acc, l_i, m_i, q, q_pos, unmasked_end, hi, qk_scale,
        k_cache_ptr, v_cache_ptr, k_cache_ptr, v_cache_ptr, prefix_table, 0, kv_offset,
        cache_stride_s, cache_stride_s, cache_stride_b,
        BLOCK_SIZE, HEAD_DIM, BLOCK_N, FROM_CACHE, True, DOT_PRECISION,
    )  # fmt: skip

    lse = tl.where(row_ok, m_i + tl.log2(l_i), float("-inf"))
    tl.store(part_lse_ptr + part, lse, mask=head_ok)
    tl.store(
        part_out_ptr + part[:, None] * HEAD_DIM + offs_d[None, :],
        acc / l_i[:, None],
        mask=row_ok[:, None],
    )


def plan_prefix_pieces(
    row_tiles: int,
    num_kv_heads: int,
    max_prefix_len: int,
    device: torch.device,
    config: CascadeConfig,
) -> int:
    """How many pieces the prefix grid cuts a prefix of up to `max_prefix_len` tokens into, so
    it fills the GPU, from shapes alone (a captured graph serves every prefix length)."""  # fmt: skip
    wanted = cdiv(num_sms(device) * config.programs_per_sm, row_tiles * num_kv_heads)
    most = max(1, max_prefix_len // config.min_piece_tokens)
    return max(1, min(wanted, most))


def cascade_attention(
    query: torch.Tensor,  # (num_seqs, num_heads, head_dim): one new token per sequence
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables: torch.Tensor,  # (num_seqs, max_blocks_per_seq) int32
    seq_lens: torch.Tensor,  # (num_seqs,) int32, including the new token
    query_start_loc: torch.Tensor,  # (num_seqs + 1,) int32
    scale: float,
    prefix: torch.Tensor,  # (2,) int32 on the query's device: prefix_blocks, prefix_row
    out: torch.Tensor | None = None,
    *,
    num_splits: int | None = None,
    prefix_splits: int | None = None,
    config: CascadeConfig | None = None,
) -> torch.Tensor:
    """reference.cascade_attention on the GPU: the shared prefix is read once per KV head tile.

    `prefix`'s values are not read on the host (no sync); out-of-range values are clamped.
    `num_splits` (suffix splits), `prefix_splits` (prefix pieces) and `config` are for tests and
    tuning; by default they are chosen from the shapes.
    """
    check_paged_attention_args(
        query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out
    )
    check_cascade_prefix(query, block_tables, prefix)
    config = config or default_config(query.device)
    num_seqs, num_heads, head_dim = query.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    group = num_heads // num_kv_heads
    group_pad = next_power_of_2(group)
    tiles = config.tiles
    if tiles.block_m % group_pad:
        raise ValueError(f"block_m {tiles.block_m} cannot hold {group_pad} heads per sequence")
    if config.min_piece_tokens % tiles.block_n:
        raise ValueError(
            f"min_piece_tokens {config.min_piece_tokens} is not a multiple of block_n "
            f"{tiles.block_n}"
        )
    if out is None:
        out = torch.empty_like(query)
    device = query.device
    width = block_tables.shape[1]
    max_context = width * block_size
    row_tiles = cdiv(num_seqs * group_pad, tiles.block_m)
    pieces = prefix_splits or plan_prefix_pieces(
        row_tiles, num_kv_heads, max_context, device, config
    )
    splits = plan_splits(num_seqs, num_kv_heads, max_context, device, config.decode, num_splits)
    parts = empty_parts(num_seqs, num_heads, splits + pieces, head_dim, device)
    context_starts = torch.empty(num_seqs, dtype=torch.int32, device=device)
    _prefix_kernel[(row_tiles, num_kv_heads, pieces)](
        query,
        k_cache,
        v_cache,
        block_tables,
        seq_lens,
        query_start_loc,
        context_starts,
        *parts,
        prefix,
        scale * LOG2E,
        num_seqs,
        num_heads,
        width,
        config.min_piece_tokens,
        splits,
        splits + pieces,
        query.stride(0),
        query.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        block_tables.stride(0),
        BLOCK_SIZE=block_size,
        GROUP=group,
        GROUP_PAD=group_pad,
        BLOCK_M=tiles.block_m,
        HEAD_DIM=head_dim,
        BLOCK_N=tiles.block_n,
        COMPARE_BLOCKS=config.compare_blocks,
        DOT_PRECISION=dot_precision(query.dtype),
        num_warps=tiles.num_warps,
        num_stages=tiles.num_stages,
    )
    args = (query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, out)
    launch_split_kernel(
        *args,
        parts,
        splits,
        split_floor(config.decode, num_splits),
        config.decode,
        context_starts=context_starts,
    )
    launch_merge_kernel(*parts, query_start_loc, out)
    return out
