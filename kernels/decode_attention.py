"""Split-KV ("flash-decoding") paged attention for batches where every sequence has one new token.

Decode is bound by reading K/V. One program per (sequence, KV head, KV split) handles all the
query heads that share the KV head, so each K/V byte is read once; the context is cut into
splits so a small batch with long contexts still fills every SM. The first kernel writes each
split's normalized partial output and its log-sum-exp; the second merges the splits. With one
split the first kernel writes the output itself.

Cascade attention (cascade_attention.py) reuses both kernels: the split kernel then starts each
sequence at its own context offset (after the shared prefix) and always writes partials, into
entries that the prefix kernel shares with it; the merge takes every entry.
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
    pdl_launch_dependents,
    pdl_wait,
    use_pdl,
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
    min_split_tokens: int = 64
    """A split never covers fewer context tokens than this (each adds a merge entry). One tile:
    at batch 1 a 384-token context in 256-token splits kept the kernel at ~12 us per layer on
    an H100, latency of a few programs walking their keys one tile after another."""


# NOTE: arguments that vary from step to step are not specialized on (Triton would compile a
# variant per divisibility by 16 or value 1), so a new batch shape compiles nothing mid-serving.
@triton.jit(do_not_specialize=["min_split_tokens", "num_parts", "block_tables_stride"])
def _decode_split_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    context_starts_ptr,  # (num_seqs,) int32, read when HAS_CONTEXT_START: first key of each
    out_ptr,  # (num_tokens, num_heads, head_dim); written when SINGLE_SPLIT
    part_out_ptr,  # (num_seqs, num_heads, num_parts, head_dim) float32; entry = split
    part_lse_ptr,  # (num_seqs, num_heads, num_parts) float32, log2 domain; -inf = empty
    qk_scale,  # softmax scale * log2(e)
    q_stride_t,
    q_stride_h,
    out_stride_t,
    out_stride_h,
    cache_stride_b,
    cache_stride_s,
    cache_stride_h,
    block_tables_stride,
    min_split_tokens,  # a multiple of BLOCK_N: the shortest split worth a merge entry
    num_heads,
    num_parts,  # NOTE: a runtime value, so batch sizes that change it compile nothing new
    BLOCK_SIZE: tl.constexpr,
    GROUP: tl.constexpr,  # query heads per KV head
    GROUP_PAD: tl.constexpr,  # GROUP padded to a power of two >= 16 (tl.dot's minimum)
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SINGLE_SPLIT: tl.constexpr,  # write `out` directly, no merge
    HAS_CONTEXT_START: tl.constexpr,  # keys start at context_starts[seq], not 0
    DOT_PRECISION: tl.constexpr,
    PDL: tl.constexpr,  # launched with programmatic dependent launch (triton_utils)
):
    # Everything below reads the previous kernels' output (q, the new K/V, context starts).
    pdl_launch_dependents(PDL)
    pdl_wait(PDL)
    # KV heads vary fastest in the launch order: the programs of one sequence's heads run side
    # by side and together read each cache block's rows whole (a block holds every head's
    # slice of a token, 256 bytes apart). Sequences fastest: 1% slower at 99 x 4K and 256 x 700
    # on an H100 inside a power-capped step (BENCHMARKS.md, "W3 reaches its target").
    kv_head = tl.program_id(0)
    seq = tl.program_id(1)
    split = tl.program_id(2)
    offs_g = tl.arange(0, GROUP_PAD)
    heads = kv_head * GROUP + offs_g
    head_ok = offs_g < GROUP
    part = (seq * num_heads + heads) * num_parts + split  # (GROUP_PAD,)
    seq_len = tl.load(seq_lens_ptr + seq)
    context_start = 0
    if HAS_CONTEXT_START:
        context_start = tl.load(context_starts_ptr + seq)
    # Each sequence's own keys are cut into the grid's splits (none shorter than
    # min_split_tokens), not a width fixed by the longest possible context: a graph's grid is
    # planned for max_model_len, and a fixed width left one program per KV head doing a short
    # context alone while the others had nothing to do.
    split_len = tl.cdiv(tl.cdiv(seq_len - context_start, tl.num_programs(2)), BLOCK_N) * BLOCK_N
    tokens_per_split = tl.maximum(split_len, min_split_tokens)
    start = context_start + split * tokens_per_split
    if start >= seq_len:
        if not SINGLE_SPLIT:  # (a single split always has keys)
            # An empty split: an LSE of -inf tells the merge to skip the entry.
            empty = tl.full([GROUP_PAD], float("-inf"), tl.float32)
            tl.store(part_lse_ptr + part, empty, mask=head_ok)
        return
    end = tl.minimum(start + tokens_per_split, seq_len)

    offs_d = tl.arange(0, HEAD_DIM)
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
        tl.store(
            part_out_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=head_ok[:, None]
        )
        tl.store(part_lse_ptr + part, m_i + tl.log2(l_i), mask=head_ok)


# NOTE: arguments that vary from step to step are not specialized on (Triton would compile a
# variant per divisibility by 16 or value 1), so a new batch shape compiles nothing mid-serving.
@triton.jit(do_not_specialize=["num_parts"])
def _decode_merge_kernel(
    part_out_ptr,  # (num_seqs, num_heads, num_parts, head_dim) float32
    part_lse_ptr,  # (num_seqs, num_heads, num_parts) float32, log2 domain; -inf = empty
    query_start_loc_ptr,
    out_ptr,
    out_stride_t,
    out_stride_h,
    num_heads,
    num_parts,
    HEAD_DIM: tl.constexpr,
    PARTS_BLOCK: tl.constexpr,  # entries per loop iteration
    PDL: tl.constexpr,  # launched with programmatic dependent launch (triton_utils)
):
    # The next kernel (the output projection) may start streaming its weights meanwhile.
    pdl_launch_dependents(PDL)
    pdl_wait(PDL)
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_d = tl.arange(0, HEAD_DIM)
    first = (seq * num_heads + head) * num_parts
    # NOTE: a loop over blocks of entries rather than one block of num_parts rounded up to a
    # power of two: the entry count varies per step (cascade adds prefix pieces to the splits),
    # and a block size per count compiled a new kernel in the middle of serving.
    m = tl.full([PARTS_BLOCK], float("-inf"), tl.float32)
    for p0 in range(0, num_parts, PARTS_BLOCK):  # pass 1: the largest LSE
        offs_p = p0 + tl.arange(0, PARTS_BLOCK)
        lse = tl.load(part_lse_ptr + first + offs_p, mask=offs_p < num_parts, other=float("-inf"))
        m = tl.maximum(m, lse)
    m_max = tl.max(m, 0)  # finite: every (sequence, head) has a non-empty entry
    acc = tl.zeros([HEAD_DIM], tl.float32)
    weights = tl.zeros([PARTS_BLOCK], tl.float32)
    for p0 in range(0, num_parts, PARTS_BLOCK):  # pass 2: the weighted sum
        offs_p = p0 + tl.arange(0, PARTS_BLOCK)
        lse = tl.load(part_lse_ptr + first + offs_p, mask=offs_p < num_parts, other=float("-inf"))
        # Empty entries (LSE -inf) hold no output: mask them out, never multiply by them.
        valid = lse > float("-inf")
        weight = tl.where(valid, tl.exp2(lse - m_max), 0.0)
        parts = tl.load(
            part_out_ptr + (first + offs_p)[:, None] * HEAD_DIM + offs_d[None, :],
            mask=valid[:, None],
            other=0.0,
        )
        acc += tl.sum(parts * weight[:, None], 0)
        weights += weight
    acc = acc / tl.sum(weights, 0)
    token = tl.load(query_start_loc_ptr + seq)
    tl.store(
        out_ptr + token * out_stride_t + head * out_stride_h + offs_d,
        acc.to(out_ptr.dtype.element_ty),
    )


# Entries the merge kernel reads per loop iteration (most steps have fewer: one iteration).
MERGE_PARTS_BLOCK = 16


def choose_num_splits(
    num_seqs: int, num_kv_heads: int, max_context: int, device: torch.device, config: DecodeConfig
) -> int:
    """Splits per sequence so the grid fills the GPU, from shapes only (no device sync)."""
    base = num_seqs * num_kv_heads
    wanted = cdiv(num_sms(device) * config.programs_per_sm, base)
    most = max(1, max_context // config.min_split_tokens)
    return max(1, min(wanted, most))


def plan_splits(
    num_seqs: int,
    num_kv_heads: int,
    max_context: int,
    device: torch.device,
    config: DecodeConfig,
    num_splits: int | None = None,
) -> int:
    """The grid's splits per sequence for contexts of up to `max_context` keys (`num_splits`
    overrides the choice). The kernel cuts each sequence's own keys into them; the count is
    what whole BLOCK_N runs covering `max_context` need (rounding may leave fewer)."""
    splits = num_splits or choose_num_splits(num_seqs, num_kv_heads, max_context, device, config)
    return cdiv(max_context, cdiv(cdiv(max_context, splits), config.block_n) * config.block_n)


def split_floor(config: DecodeConfig, num_splits: int | None) -> int:
    """The shortest split: the config's floor, or one tile when a caller forces the split count
    (tests use it to get many non-empty splits out of short contexts)."""
    return config.block_n if num_splits else config.min_split_tokens


def launch_split_kernel(
    query: torch.Tensor,  # (num_tokens, num_heads, head_dim)
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # (num_seqs, max_blocks_per_seq) int32
    seq_lens: torch.Tensor,  # (num_seqs,) int32
    query_start_loc: torch.Tensor,  # (num_seqs + 1,) int32
    scale: float,
    out: torch.Tensor,  # (num_tokens, num_heads, head_dim)
    parts: tuple[torch.Tensor, torch.Tensor] | None,
    splits: int,
    min_split_tokens: int,
    config: DecodeConfig,
    context_starts: torch.Tensor | None = None,
) -> None:
    """Runs the split kernel: into `out` when `parts` is None (one split), else into the first
    `splits` entries of `parts` = (part_out, part_lse), which may hold more entries. Each
    sequence's keys are cut into `splits` equal runs of whole BLOCK_N tiles, none shorter than
    `min_split_tokens` (so a short context uses fewer splits; the rest are empty entries).

    `context_starts` (num_seqs,) int32: each sequence's keys start there instead of at 0.
    """
    num_seqs, num_heads, head_dim = seq_lens.shape[0], query.shape[1], query.shape[2]
    _, block_size, num_kv_heads, _ = k_cache.shape
    group = num_heads // num_kv_heads
    if parts is None and splits != 1:
        raise ValueError(f"{splits} splits need partial outputs to merge")
    part_out, part_lse = parts if parts is not None else (out, out)  # (unused without parts)
    pdl = use_pdl(query.device)
    _decode_split_kernel[(num_kv_heads, num_seqs, splits)](
        query,
        k_cache,
        v_cache,
        block_tables,
        seq_lens,
        query_start_loc,
        context_starts if context_starts is not None else seq_lens,  # (unread without)
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
        cdiv(min_split_tokens, config.block_n) * config.block_n,
        num_heads,
        part_lse.shape[2] if parts is not None else 1,
        BLOCK_SIZE=block_size,
        GROUP=group,
        GROUP_PAD=max(MIN_DOT_DIM, next_power_of_2(group)),
        HEAD_DIM=head_dim,
        BLOCK_N=config.block_n,
        SINGLE_SPLIT=parts is None,
        HAS_CONTEXT_START=context_starts is not None,
        DOT_PRECISION=dot_precision(query.dtype),
        PDL=pdl,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        launch_pdl=pdl,
    )


def launch_merge_kernel(
    part_out: torch.Tensor,  # (num_seqs, num_heads, num_parts, head_dim) float32
    part_lse: torch.Tensor,  # (num_seqs, num_heads, num_parts) float32; -inf = empty entry
    query_start_loc: torch.Tensor,  # (num_seqs + 1,) int32
    out: torch.Tensor,  # (num_tokens, num_heads, head_dim)
) -> None:
    """Merges every sequence's non-empty entries into its token's row of `out`."""
    num_seqs, num_heads, num_parts, head_dim = part_out.shape
    pdl = use_pdl(out.device)
    _decode_merge_kernel[(num_seqs, num_heads)](
        part_out,
        part_lse,
        query_start_loc,
        out,
        out.stride(0),
        out.stride(1),
        num_heads,
        num_parts,
        HEAD_DIM=head_dim,
        PARTS_BLOCK=MERGE_PARTS_BLOCK,
        PDL=pdl,
        num_warps=4,
        launch_pdl=pdl,
    )


def empty_parts(
    num_seqs: int, num_heads: int, num_parts: int, head_dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised (part_out, part_lse) buffers of `num_parts` entries per (sequence, head)."""
    part_out = torch.empty(
        num_seqs, num_heads, num_parts, head_dim, dtype=torch.float32, device=device
    )
    part_lse = torch.empty(num_seqs, num_heads, num_parts, dtype=torch.float32, device=device)
    return part_out, part_lse


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
    num_kv_heads = k_cache.shape[2]
    if query.shape[0] != num_seqs:
        raise ValueError(
            f"decode attention needs one query token per sequence, got {query.shape[0]} for {num_seqs}"
        )
    if out is None:
        out = torch.empty_like(query)
    max_context = block_tables.shape[1] * k_cache.shape[1]
    splits = plan_splits(num_seqs, num_kv_heads, max_context, query.device, config, num_splits)
    parts = None
    if splits > 1:
        parts = empty_parts(num_seqs, num_heads, splits, head_dim, query.device)
    args = (query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, out)
    launch_split_kernel(*args, parts, splits, split_floor(config, num_splits), config)
    if parts is not None:
        launch_merge_kernel(*parts, query_start_loc, out)
    return out
