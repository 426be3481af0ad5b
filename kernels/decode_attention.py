"""Split-KV ("flash-decoding") paged attention for batches where every sequence has one new token.

Decode is bound by reading K/V. One program per (sequence, KV head, KV split) handles all the
query heads that share the KV head, so each K/V byte is read once; the context is cut into
splits so a small batch with long contexts still fills every SM. The first kernel writes each
split's normalized partial output and its log-sum-exp; the second merges the splits. With one
split the first kernel writes the output itself.
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
    MIN_DOT_DIM,
    cdiv,
    check_paged_attention_args,
    dot_precision,
    next_power_of_2,
    num_sms,
)


@dataclass(frozen=True)
class DecodeConfig:
    """Launch parameters of the split kernel."""

    block_n: int = 64
    """Context tokens per loop iteration."""
    num_warps: int = 4
    """Warps per program."""
    num_stages: int = 3
    """Software-pipelining depth of the K/V loads."""
    programs_per_sm: int = 2
    """Target programs per SM when choosing the number of splits (H100: 2 beat 4, 8, 16, 32
    at 64 x 4K, where it means one split and no merge)."""
    min_split_tokens: int = 256
    """A split never covers fewer context tokens than this (the merge has a cost)."""


# NOTE: arguments that vary from step to step are not specialized on (Triton would compile a
# variant per divisibility by 16 or value 1), so a new batch shape compiles nothing mid-serving.
@triton.jit(do_not_specialize=["tokens_per_split", "num_splits", "block_tables_stride"])
def _decode_split_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    out_ptr,  # (num_tokens, num_heads, head_dim); written when SINGLE_SPLIT
    part_out_ptr,  # (num_seqs, num_heads, num_splits, head_dim) float32
    part_lse_ptr,  # (num_seqs, num_heads, num_splits) float32, log2 domain
    qk_scale,  # softmax scale * log2(e)
    q_stride_t,
    q_stride_h,
    out_stride_t,
    out_stride_h,
    cache_stride_b,
    cache_stride_s,
    cache_stride_h,
    block_tables_stride,
    tokens_per_split,  # a multiple of BLOCK_N
    num_heads,
    num_splits,  # NOTE: a runtime value, so batch sizes that change it compile nothing new
    BLOCK_SIZE: tl.constexpr,
    GROUP: tl.constexpr,  # query heads per KV head
    GROUP_PAD: tl.constexpr,  # GROUP padded to a power of two >= 16 (tl.dot's minimum)
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SINGLE_SPLIT: tl.constexpr,  # write `out` directly, no merge
    DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    start = split * tokens_per_split
    if start >= seq_len:
        return  # an empty split: the merge ignores it
    end = tl.minimum(start + tokens_per_split, seq_len)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    heads = kv_head * GROUP + offs_g
    head_ok = offs_g < GROUP
    token = tl.load(query_start_loc_ptr + seq)
    q = tl.load(
        q_ptr + token * q_stride_t + heads[:, None] * q_stride_h + offs_d[None, :],
        mask=head_ok[:, None],
        other=0.0,
    )  # (GROUP_PAD, HEAD_DIM)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    table = block_tables_ptr + seq * block_tables_stride
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < end
        block = tl.load(table + offs_n // BLOCK_SIZE, mask=n_ok, other=0).to(tl.int64)
        rows = block * cache_stride_b + (offs_n % BLOCK_SIZE) * cache_stride_s
        rows += kv_head * cache_stride_h
        k = tl.load(k_cache_ptr + rows[:, None] + offs_d[None, :], mask=n_ok[:, None], other=0.0)
        v = tl.load(v_cache_ptr + rows[:, None] + offs_d[None, :], mask=n_ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # (GROUP_PAD, BLOCK_N)
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    acc = acc / l_i[:, None]
    if SINGLE_SPLIT:
        out = out_ptr + token * out_stride_t + heads[:, None] * out_stride_h + offs_d[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=head_ok[:, None])
    else:
        part = (seq * num_heads + heads) * num_splits + split  # (GROUP_PAD,)
        tl.store(
            part_out_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=head_ok[:, None]
        )
        tl.store(part_lse_ptr + part, m_i + tl.log2(l_i), mask=head_ok)


# NOTE: arguments that vary from step to step are not specialized on (Triton would compile a
# variant per divisibility by 16 or value 1), so a new batch shape compiles nothing mid-serving.
@triton.jit(do_not_specialize=["tokens_per_split", "num_splits"])
def _decode_merge_kernel(
    part_out_ptr,
    part_lse_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    out_ptr,
    out_stride_t,
    out_stride_h,
    tokens_per_split,
    num_heads,
    num_splits,
    HEAD_DIM: tl.constexpr,
    SPLITS_PAD: tl.constexpr,  # num_splits rounded up to a power of two
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + seq)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    # Splits at or past seq_len were never written: mask them out, never multiply by them.
    valid = (offs_s < num_splits) & (offs_s * tokens_per_split < seq_len)
    part = (seq * num_heads + head) * num_splits + offs_s
    lse = tl.load(part_lse_ptr + part, mask=valid, other=float("-inf"))
    weight = tl.where(valid, tl.exp2(lse - tl.max(lse, 0)), 0.0)
    parts = tl.load(
        part_out_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], mask=valid[:, None], other=0.0
    )
    acc = tl.sum(parts * weight[:, None], 0) / tl.sum(weight, 0)
    token = tl.load(query_start_loc_ptr + seq)
    tl.store(
        out_ptr + token * out_stride_t + head * out_stride_h + offs_d,
        acc.to(out_ptr.dtype.element_ty),
    )


def choose_num_splits(
    num_seqs: int, num_kv_heads: int, max_context: int, device: torch.device, config: DecodeConfig
) -> int:
    """Splits per sequence so the grid fills the GPU, from shapes only (no device sync)."""
    base = num_seqs * num_kv_heads
    wanted = cdiv(num_sms(device) * config.programs_per_sm, base)
    most = max(1, max_context // config.min_split_tokens)
    return max(1, min(wanted, most))


def paged_attention(
    query: torch.Tensor,  # (num_seqs, num_heads, head_dim): one new token per sequence
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables: torch.Tensor,  # (num_seqs, max_blocks_per_seq) int32
    seq_lens: torch.Tensor,  # (num_seqs,) int32, including the new token
    query_start_loc: torch.Tensor,  # (num_seqs + 1,) int32
    scale: float,
    out: torch.Tensor | None = None,
    *,
    num_splits: int | None = None,
    config: DecodeConfig | None = None,
) -> torch.Tensor:
    """reference.paged_attention for batches where every sequence has exactly one new token.

    `num_splits` (default: chosen from the shapes) and `config` are for tests and tuning.
    """
    check_paged_attention_args(
        query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out
    )
    config = config or DecodeConfig()
    num_seqs, num_heads, head_dim = seq_lens.shape[0], query.shape[1], query.shape[2]
    _, block_size, num_kv_heads, _ = k_cache.shape
    if query.shape[0] != num_seqs:
        raise ValueError(
            f"decode attention needs one query token per sequence, got {query.shape[0]} for {num_seqs}"
        )
    if out is None:
        out = torch.empty_like(query)

    max_context = block_tables.shape[1] * block_size
    splits = num_splits or choose_num_splits(
        num_seqs, num_kv_heads, max_context, query.device, config
    )
    tokens_per_split = cdiv(cdiv(max_context, splits), config.block_n) * config.block_n
    splits = cdiv(max_context, tokens_per_split)  # rounding up may leave fewer splits
    group = num_heads // num_kv_heads
    if splits > 1:
        part_out = torch.empty(
            num_seqs, num_heads, splits, head_dim, dtype=torch.float32, device=query.device
        )
        part_lse = torch.empty(
            num_seqs, num_heads, splits, dtype=torch.float32, device=query.device
        )
    else:  # never read: the split kernel writes `out` directly
        part_out = part_lse = out
    _decode_split_kernel[(num_seqs, num_kv_heads, splits)](
        query,
        k_cache,
        v_cache,
        block_tables,
        seq_lens,
        query_start_loc,
        out,
        part_out,
        part_lse,
        scale * LOG2E,
        query.stride(0),
        query.stride(1),
        out.stride(0),
        out.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        block_tables.stride(0),
        tokens_per_split,
        num_heads,
        splits,
        BLOCK_SIZE=block_size,
        GROUP=group,
        GROUP_PAD=max(MIN_DOT_DIM, next_power_of_2(group)),
        HEAD_DIM=head_dim,
        BLOCK_N=config.block_n,
        SINGLE_SPLIT=splits == 1,
        DOT_PRECISION=dot_precision(query.dtype),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    if splits > 1:
        _decode_merge_kernel[(num_seqs, num_heads)](
            part_out,
            part_lse,
            seq_lens,
            query_start_loc,
            out,
            out.stride(0),
            out.stride(1),
            tokens_per_split,
            num_heads,
            splits,
            HEAD_DIM=head_dim,
            SPLITS_PAD=next_power_of_2(splits),
            num_warps=4,
        )
    return out
