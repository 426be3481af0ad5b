"""Paged attention for mixed batches (prefill chunks, cached prefixes, decodes) in one launch.

Flash-attention style: a program takes a tile of one sequence's new tokens times all the
query heads that share one KV head (GQA packing: K/V is read once per group), walks the
sequence's blocks through the block table with an online softmax, and writes its rows of the
output. Keys every row of the tile may see (the cached prefix and earlier new tokens) are
visited without masks; only the tiles on the diagonal are causally masked.

The grid needs no device-to-host sync: sequence i's tiles get the program ids starting at
`(query_start_loc[i] - query_start_loc[0]) // BLOCK_Q + i`, which leaves room for ceil(q_len_i /
BLOCK_Q) tiles; a
program finds its sequence by binary search and exits if its tile is past the sequence's end.
"""

# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: @triton.jit is untyped and reads its parameters' annotations itself.)

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from llmservice.kernels.triton_utils import (
    LOG2E,
    check_paged_attention_args,
    dot_precision,
    next_power_of_2,
)


@dataclass(frozen=True)
class ExtendConfig:
    """Launch parameters of the extend kernel."""

    block_m: int = 256
    """Query rows per program: tokens x (query heads per KV head, padded to a power of two)."""
    block_n: int = 64
    """Context tokens per loop iteration."""
    num_warps: int = 8
    """Warps per program."""
    num_stages: int = 3
    """Software-pipelining depth of the K/V loads."""
    lazy_rescale: bool = False
    """Rescale the running output only when a row's maximum grew by more than 2^8 (below)."""


# With lazy rescaling the running maximum may lag the true one by up to this much (log2 units):
# probabilities stay below 2^8, far inside bf16's and float32's range, and the output and its
# normalizer are rescaled together, so the result is the same softmax.
LAZY_RESCALE_LOG2 = tl.constexpr(8.0)

# Batches averaging at least this many new tokens per sequence count as prefill-heavy.
PREFILL_HEAVY_QUERY_LEN = 64


def default_config(
    head_dim: int, device: torch.device, num_tokens: int, num_seqs: int
) -> ExtendConfig:
    """Tiles measured best on an H100 (BENCHMARKS.md, Kernels) for the batch's shape.

    Prefill-heavy batches take 256-row tiles (48% of peak at a 4K prompt vs 45% for 128x128);
    batches that are mostly decodes take 128-row tiles, as a decode fills only a few rows of a
    tile (a 2048-token chunk + 128 decodes: 0.35 ms vs 0.48 ms). The interpreter gets small
    tiles: it runs them with numpy.
    """
    if device.type != "cuda":
        return ExtendConfig(block_m=32, block_n=16, num_warps=4, num_stages=1)
    if head_dim <= 64:
        return ExtendConfig(block_m=128, block_n=64, num_warps=8, num_stages=3)
    if num_tokens >= PREFILL_HEAVY_QUERY_LEN * num_seqs:
        return ExtendConfig()
    return ExtendConfig(block_m=128, block_n=128, num_warps=8, num_stages=3)


@triton.jit
def _attend_keys(
    acc,
    l_i,
    m_i,
    q,
    k_cache_ptr,
    v_cache_ptr,
    table_ptr,
    kv_offset,
    q_pos,
    lo,
    hi,
    qk_scale,
    cache_stride_b,
    cache_stride_s,
    BLOCK_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    LAZY_RESCALE: tl.constexpr = False,
):
    """Folds keys [lo, hi) into the online softmax; masks causally (and hi) when asked.

    With LAZY_RESCALE, m_i may stay below the rows' true maximum (by less than 2^8): acc and
    l_i are then relative to that m_i, which is all the final division and a merge need.
    """
    offs_d = tl.arange(0, HEAD_DIM)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        if CAUSAL_MASK:
            n_ok = offs_n < hi
            block = tl.load(table_ptr + offs_n // BLOCK_SIZE, mask=n_ok, other=0)
        else:
            block = tl.load(table_ptr + offs_n // BLOCK_SIZE)
        rows = block.to(tl.int64) * cache_stride_b + (offs_n % BLOCK_SIZE) * cache_stride_s
        kv = rows[:, None] + kv_offset + offs_d[None, :]  # (BLOCK_N, HEAD_DIM)
        if CAUSAL_MASK:
            k = tl.load(k_cache_ptr + kv, mask=n_ok[:, None], other=0.0)
            v = tl.load(v_cache_ptr + kv, mask=n_ok[:, None], other=0.0)
        else:
            k = tl.load(k_cache_ptr + kv)
            v = tl.load(v_cache_ptr + kv)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N), unscaled
        if CAUSAL_MASK:
            s = tl.where(offs_n[None, :] <= q_pos[:, None], s, float("-inf"))
        # m_i is in scaled (log2) units; the scale folds into one FMA before the exp2.
        m_tile = tl.max(s, 1) * qk_scale
        if LAZY_RESCALE:
            # FlashAttention-4's trick: the (BLOCK_M, HEAD_DIM) multiply of the output is skipped
            # unless some row's maximum grew by more than 2^LAZY_RESCALE_LOG2 (always on the
            # first tile, where m_i is -inf). A fully masked row has m_tile = -inf: no growth.
            if tl.max(m_tile - m_i, 0) > LAZY_RESCALE_LOG2:
                m_new = tl.maximum(m_i, m_tile)
                alpha = tl.exp2(m_i - m_new)
                l_i = l_i * alpha
                acc = acc * alpha[:, None]
                m_i = m_new
            p = tl.exp2(s * qk_scale - m_i[:, None])
            l_i = l_i + tl.sum(p, 1)
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        else:
            m_new = tl.maximum(m_i, m_tile)
            p = tl.exp2(s * qk_scale - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new
    return acc, l_i, m_i


# NOTE: arguments that vary from step to step are not specialized on (Triton would compile a
# variant per divisibility by 16 or value 1), so a new batch shape compiles nothing mid-serving.
@triton.jit(
    do_not_specialize=["num_seqs", "block_tables_stride"],
    # The tail of a batch (after its decodes) starts these at any row: no alignment variants.
    do_not_specialize_on_alignment=["block_tables_ptr", "seq_lens_ptr", "query_start_loc_ptr"],
)
def _extend_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    out_ptr,
    qk_scale,  # softmax scale * log2(e)
    num_seqs,
    q_stride_t,
    q_stride_h,
    out_stride_t,
    out_stride_h,
    cache_stride_b,
    cache_stride_s,
    cache_stride_h,
    block_tables_stride,
    NUM_KV_HEADS: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    GROUP: tl.constexpr,  # query heads per KV head
    GROUP_PAD: tl.constexpr,  # GROUP rounded up to a power of two
    BLOCK_Q: tl.constexpr,  # tokens per tile = BLOCK_M // GROUP_PAD
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    LAZY_RESCALE: tl.constexpr,
):
    # One flat grid, KV heads varying fastest and tile ids reversed: a sequence's last tiles
    # see the most keys, so the heaviest programs of every head start first (shorter tail).
    flat = tl.num_programs(0) - 1 - tl.program_id(0)
    kv_head = flat % NUM_KV_HEADS
    pid = flat // NUM_KV_HEADS

    # The sequence of this tile: the last i with (query_start_loc[i] - base) // BLOCK_Q + i <=
    # pid. `base` is 0 unless the caller passed the tail of a batch (decodes split off first).
    base = tl.load(query_start_loc_ptr)
    lo = tl.full([], 0, tl.int32)  # tensors from the start: loop-carried types must not change
    hi = lo + num_seqs - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        first = (tl.load(query_start_loc_ptr + mid) - base) // BLOCK_Q + mid
        lo = tl.where(first <= pid, mid, lo)
        hi = tl.where(first <= pid, hi, mid - 1)
    seq = lo
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    q_block = pid - ((q_start - base) // BLOCK_Q + seq)
    if q_block * BLOCK_Q >= q_len:
        return
    context = tl.load(seq_lens_ptr + seq) - q_len  # cached tokens before the new ones

    offs_m = tl.arange(0, BLOCK_Q * GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    token = q_block * BLOCK_Q + offs_m // GROUP_PAD  # index among the sequence's new tokens
    group_idx = offs_m % GROUP_PAD
    head = kv_head * GROUP + group_idx
    row_ok = (token < q_len) & (group_idx < GROUP)
    q_rows = (q_start + token) * q_stride_t + head * q_stride_h
    q = tl.load(q_ptr + q_rows[:, None] + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    # Padding rows take the last real token's position so no row is fully masked (no NaN).
    q_pos = context + tl.minimum(token, q_len - 1)

    first_pos = context + q_block * BLOCK_Q
    last_pos = context + tl.minimum(q_block * BLOCK_Q + BLOCK_Q, q_len) - 1
    unmasked_end = (first_pos + 1) // BLOCK_N * BLOCK_N  # every row sees all keys below it

    m_i = tl.full([BLOCK_Q * GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q * GROUP_PAD], tl.float32)
    acc = tl.zeros([BLOCK_Q * GROUP_PAD, HEAD_DIM], tl.float32)
    table = block_tables_ptr + seq * block_tables_stride
    kv_offset = kv_head * cache_stride_h
    acc, l_i, m_i = _attend_keys(
        acc, l_i, m_i, q, k_cache_ptr, v_cache_ptr, table, kv_offset, q_pos, 0, unmasked_end,
        qk_scale, cache_stride_b, cache_stride_s, BLOCK_SIZE, HEAD_DIM, BLOCK_N, False, DOT_PRECISION,
        LAZY_RESCALE,
    )  # fmt: skip
    acc, l_i, m_i = _attend_keys(
        acc, l_i, m_i, q, k_cache_ptr, v_cache_ptr, table, kv_offset, q_pos, unmasked_end,
        last_pos + 1, qk_scale, cache_stride_b, cache_stride_s, BLOCK_SIZE, HEAD_DIM, BLOCK_N,
        True, DOT_PRECISION, LAZY_RESCALE,
    )  # fmt: skip

    acc = acc / l_i[:, None]
    out_rows = (q_start + token) * out_stride_t + head * out_stride_h
    tl.store(
        out_ptr + out_rows[:, None] + offs_d[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None],
    )


def paged_attention(
    query: torch.Tensor,  # (num_tokens, num_heads, head_dim)
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables: torch.Tensor,  # (num_seqs, max_blocks_per_seq) int32
    seq_lens: torch.Tensor,  # (num_seqs,) int32, including the new tokens
    query_start_loc: torch.Tensor,  # (num_seqs + 1,) int32
    scale: float,
    out: torch.Tensor | None = None,
    *,
    config: ExtendConfig | None = None,
) -> torch.Tensor:
    """reference.paged_attention on the GPU for any mix of query lengths (each >= 1).

    `config` is for tests and tuning.
    """
    check_paged_attention_args(
        query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out
    )
    num_tokens, num_heads, head_dim = query.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    num_seqs = seq_lens.shape[0]
    config = config or default_config(head_dim, query.device, num_tokens, num_seqs)
    group = num_heads // num_kv_heads
    group_pad = next_power_of_2(group)
    if config.block_m % group_pad or config.block_m // group_pad < 1:
        raise ValueError(f"block_m {config.block_m} cannot hold {group_pad} heads per token")
    block_q = config.block_m // group_pad
    if out is None:
        out = torch.empty_like(query)
    if num_seqs == 0:
        return out
    grid = ((num_tokens // block_q + num_seqs) * num_kv_heads,)
    _extend_kernel[grid](
        query,
        k_cache,
        v_cache,
        block_tables,
        seq_lens,
        query_start_loc,
        out,
        scale * LOG2E,
        num_seqs,
        query.stride(0),
        query.stride(1),
        out.stride(0),
        out.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        block_tables.stride(0),
        NUM_KV_HEADS=num_kv_heads,
        BLOCK_SIZE=block_size,
        GROUP=group,
        GROUP_PAD=group_pad,
        BLOCK_Q=block_q,
        HEAD_DIM=head_dim,
        BLOCK_N=config.block_n,
        DOT_PRECISION=dot_precision(query.dtype),
        LAZY_RESCALE=config.lazy_rescale,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return out
