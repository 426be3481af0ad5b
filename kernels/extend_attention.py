"""Paged attention for mixed batches (prefill chunks, cached prefixes, decodes) in one launch.

Flash-attention style: a program takes a tile of one sequence's new tokens times all the
query heads that share one KV head (GQA packing: K/V is read once per group), walks the keys
with an online softmax, and writes its rows of the output. Keys come in three runs: the cached
context (through the block table), then the new tokens' keys every row of the tile may see, then
the tile's diagonal, which alone is causally masked.

The new tokens' keys are read from the cache like the context unless the caller passes them
(`new_kv`, the K/V it has just written to the cache): they are then rows of one 2-D tensor, which
Hopper's bulk tensor copy engine (TMA) loads a whole tile at a time (a 4K prompt on an H100:
0.285 ms, against 0.363 ms gathering every key through the block table; BENCHMARKS.md, "Extend
attention by TMA").

The grid needs no device-to-host sync: sequence i's tiles get the program ids starting at
`(query_start_loc[i] - query_start_loc[0]) // BLOCK_Q + i`, which leaves room for ceil(q_len_i /
BLOCK_Q) tiles; a program finds its sequence by binary search and exits if its tile is past the
sequence's end.
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
    hopper_or_later,
    next_power_of_2,
    tma_aligned,
)


@dataclass(frozen=True)
class ExtendConfig:
    """Launch parameters of the extend kernel."""

    block_m: int = 256
    """Query rows per program: tokens x (query heads per KV head, padded to a power of two)."""
    block_n: int = 64
    """Keys per loop iteration."""
    num_warps: int = 8
    """Warps per program."""
    num_stages: int = 3
    """Software-pipelining depth of the K/V loads."""


# Batches averaging at least this many new tokens per sequence count as prefill-heavy.
PREFILL_HEAVY_QUERY_LEN = 64

# Where a run of keys comes from: the paged cache (through the block table), rows of the new
# tokens' K/V read by pointers, or the same rows read by TMA descriptors.
FROM_CACHE = tl.constexpr(0)
FROM_ROWS = tl.constexpr(1)
FROM_TMA = tl.constexpr(2)


def default_config(
    head_dim: int, device: torch.device, num_tokens: int, num_seqs: int, tma: bool = False
) -> ExtendConfig:
    """Tiles measured best on an H100 (BENCHMARKS.md, Kernels) for the batch's shape.

    Prefill-heavy batches whose new keys come by TMA take 128x128 tiles (a 4K prompt: 484
    TFLOP/s vs 427 for 256x64, which spills registers beside the context loops); gathering
    every key through the block table, 256-row tiles (400 vs 349). Batches that are mostly
    decodes take 128-row tiles, as a decode fills only a few rows of a tile (a 2048-token chunk
    + 128 decodes: 0.35 ms vs 0.48 ms). The interpreter gets small tiles: it runs them with
    numpy.
    """
    if device.type != "cuda":
        return ExtendConfig(block_m=32, block_n=16, num_warps=4, num_stages=1)
    if head_dim <= 64:
        return ExtendConfig(block_m=128, block_n=64, num_warps=8, num_stages=3)
    if num_tokens >= PREFILL_HEAVY_QUERY_LEN * num_seqs and not tma:
        return ExtendConfig()
    return ExtendConfig(block_m=128, block_n=128, num_warps=8, num_stages=3)


@triton.jit
def _attend_keys(
    acc,
    l_i,
    m_i,
    q,
    q_ref,
    lo,
    hi,
    qk_scale,
    k_ptr,
    v_ptr,
    k_desc,
    v_desc,
    table_ptr,
    first_key,
    kv_offset,
    k_stride,
    v_stride,
    block_stride,
    BLOCK_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SOURCE: tl.constexpr,
    MASKED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Folds keys [lo, hi) of a run into the online softmax.

    Key j of the run is, by SOURCE: cache position first_key + j (block table at table_ptr,
    block_stride between blocks, k_stride between a block's slots); or row first_key + j of the
    new tokens' K/V (k_stride / v_stride between rows; the descriptors' rows with FROM_TMA).
    kv_offset is the KV head's column. MASKED drops keys j >= hi and keys after a row's q_ref
    (in the run's own numbering); unmasked runs must see every key of every row.
    """
    offs_d = tl.arange(0, HEAD_DIM)
    for j0 in range(lo, hi, BLOCK_N):
        offs_j = j0 + tl.arange(0, BLOCK_N)
        key_ok = offs_j < hi
        if SOURCE == FROM_TMA:
            # Rows past the tensor's end read as zeros; rows of the next sequence are masked.
            k = k_desc.load([first_key + j0, kv_offset])
            v = v_desc.load([first_key + j0, kv_offset])
        else:
            if SOURCE == FROM_CACHE:
                pos = first_key + offs_j
                if MASKED:
                    block = tl.load(table_ptr + pos // BLOCK_SIZE, mask=key_ok, other=0)
                else:
                    block = tl.load(table_ptr + pos // BLOCK_SIZE)
                rows = block.to(tl.int64) * block_stride + (pos % BLOCK_SIZE) * k_stride
                k_rows = rows
                v_rows = rows
            else:
                rows = (first_key + offs_j).to(tl.int64)
                k_rows = rows * k_stride
                v_rows = rows * v_stride
            k_addr = k_rows[:, None] + kv_offset + offs_d[None, :]  # (BLOCK_N, HEAD_DIM)
            v_addr = v_rows[:, None] + kv_offset + offs_d[None, :]
            if MASKED:
                k = tl.load(k_ptr + k_addr, mask=key_ok[:, None], other=0.0)
                v = tl.load(v_ptr + v_addr, mask=key_ok[:, None], other=0.0)
            else:
                k = tl.load(k_ptr + k_addr)
                v = tl.load(v_ptr + v_addr)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N), unscaled
        if MASKED:
            seen = key_ok[None, :] & (offs_j[None, :] <= q_ref[:, None])
            s = tl.where(seen, s, float("-inf"))
        # m_i is in scaled (log2) units; the scale folds into one FMA before the exp2.
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
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
    new_k_ptr,  # the new tokens' K/V rows (FROM_ROWS) or descriptors over them (FROM_TMA)
    new_v_ptr,
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
    new_k_stride_t,
    new_v_stride_t,
    block_tables_stride,
    NUM_KV_HEADS: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    GROUP: tl.constexpr,  # query heads per KV head
    GROUP_PAD: tl.constexpr,  # GROUP rounded up to a power of two
    BLOCK_Q: tl.constexpr,  # tokens per tile = BLOCK_M // GROUP_PAD
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NEW_SOURCE: tl.constexpr,  # where the new tokens' keys come from
    DOT_PRECISION: tl.constexpr,
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
    # Padding rows take the last real token's index so no row is fully masked (no NaN).
    q_tok = tl.minimum(token, q_len - 1)

    m_i = tl.full([BLOCK_Q * GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q * GROUP_PAD], tl.float32)
    acc = tl.zeros([BLOCK_Q * GROUP_PAD, HEAD_DIM], tl.float32)
    table = block_tables_ptr + seq * block_tables_stride
    cache_offset = kv_head * cache_stride_h

    # 1. The cached context, seen by every row: whole tiles, then the partial one (masked).
    context_tiles_end = context // BLOCK_N * BLOCK_N
    acc, l_i, m_i = _attend_keys(
        acc, l_i, m_i, q, q_tok + context, 0, context_tiles_end, qk_scale,
        k_cache_ptr, v_cache_ptr, k_cache_ptr, v_cache_ptr, table, 0, cache_offset,
        cache_stride_s, cache_stride_s, cache_stride_b,
        BLOCK_SIZE, HEAD_DIM, BLOCK_N, FROM_CACHE, False, DOT_PRECISION,
    )  # fmt: skip
    acc, l_i, m_i = _attend_keys(
        acc, l_i, m_i, q, q_tok + context, context_tiles_end, context, qk_scale,
        k_cache_ptr, v_cache_ptr, k_cache_ptr, v_cache_ptr, table, 0, cache_offset,
        cache_stride_s, cache_stride_s, cache_stride_b,
        BLOCK_SIZE, HEAD_DIM, BLOCK_N, FROM_CACHE, True, DOT_PRECISION,
    )  # fmt: skip

    # 2. The new tokens, numbered from 0: those before the tile's first token unmasked, then
    # the diagonal up to its last token.
    if NEW_SOURCE == FROM_CACHE:
        new_k, new_v, first_new, new_offset = k_cache_ptr, v_cache_ptr, context, cache_offset
        k_stride, v_stride = cache_stride_s, cache_stride_s
    else:
        new_k, new_v, first_new, new_offset = new_k_ptr, new_v_ptr, q_start, kv_head * HEAD_DIM
        k_stride, v_stride = new_k_stride_t, new_v_stride_t
    first_tok = q_block * BLOCK_Q
    last_tok = tl.minimum(first_tok + BLOCK_Q, q_len) - 1
    unmasked_end = (first_tok + 1) // BLOCK_N * BLOCK_N  # every row sees all keys below it
    acc, l_i, m_i = _attend_keys(
        acc, l_i, m_i, q, q_tok, 0, unmasked_end, qk_scale,
        new_k, new_v, new_k_ptr, new_v_ptr, table, first_new, new_offset,
        k_stride, v_stride, cache_stride_b,
        BLOCK_SIZE, HEAD_DIM, BLOCK_N, NEW_SOURCE, False, DOT_PRECISION,
    )  # fmt: skip
    acc, l_i, m_i = _attend_keys(
        acc, l_i, m_i, q, q_tok, unmasked_end, last_tok + 1, qk_scale,
        new_k, new_v, new_k_ptr, new_v_ptr, table, first_new, new_offset,
        k_stride, v_stride, cache_stride_b,
        BLOCK_SIZE, HEAD_DIM, BLOCK_N, NEW_SOURCE, True, DOT_PRECISION,
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
    new_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    config: ExtendConfig | None = None,
) -> torch.Tensor:
    """reference.paged_attention on the GPU for any mix of query lengths (each >= 1).

    `new_kv`: the new tokens' (key, value), each (num_tokens, num_kv_heads, head_dim) with the
    last two dimensions packed, as just written to the cache; their keys are then read from
    there. `config` is for tests and tuning.
    """
    check_paged_attention_args(
        query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out
    )
    num_tokens, num_heads, head_dim = query.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    num_seqs = seq_lens.shape[0]
    check_new_kv(query, k_cache, new_kv)
    tma = reads_new_kv_by_tma(new_kv)
    config = config or default_config(head_dim, query.device, num_tokens, num_seqs, tma)
    group = num_heads // num_kv_heads
    group_pad = next_power_of_2(group)
    if config.block_m % group_pad or config.block_m // group_pad < 1:
        raise ValueError(f"block_m {config.block_m} cannot hold {group_pad} heads per token")
    block_q = config.block_m // group_pad
    if out is None:
        out = torch.empty_like(query)
    if num_seqs == 0:
        return out
    source, new_k, new_v = _new_key_source(k_cache, new_kv, tma, config.block_n)
    grid = ((num_tokens // block_q + num_seqs) * num_kv_heads,)
    _extend_kernel[grid](
        query,
        k_cache,
        v_cache,
        new_k,
        new_v,
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
        new_kv[0].stride(0) if new_kv is not None else 0,
        new_kv[1].stride(0) if new_kv is not None else 0,
        block_tables.stride(0),
        NUM_KV_HEADS=num_kv_heads,
        BLOCK_SIZE=block_size,
        GROUP=group,
        GROUP_PAD=group_pad,
        BLOCK_Q=block_q,
        HEAD_DIM=head_dim,
        BLOCK_N=config.block_n,
        NEW_SOURCE=source,
        DOT_PRECISION=dot_precision(query.dtype),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return out


def check_new_kv(
    query: torch.Tensor, k_cache: torch.Tensor, new_kv: tuple[torch.Tensor, torch.Tensor] | None
) -> None:
    """Raises ValueError unless new_kv holds (num_tokens, num_kv_heads, head_dim) key and value
    tensors like the cache's, each row's heads packed."""
    if new_kv is None:
        return
    shape = (query.shape[0], k_cache.shape[2], k_cache.shape[3])
    for name, t in zip(("key", "value"), new_kv, strict=True):
        if t.shape != shape:
            raise ValueError(f"new_kv {name} must be {shape}, got {tuple(t.shape)}")
        if t.dtype != k_cache.dtype or t.device != query.device:
            raise ValueError(f"new_kv {name} must match the cache's dtype and device")
        if t.stride(2) != 1 or t.stride(1) != shape[2]:
            raise ValueError(f"new_kv {name} must have its heads packed, got {t.stride()}")


def reads_new_kv_by_tma(new_kv: tuple[torch.Tensor, torch.Tensor] | None) -> bool:
    """Whether the kernel loads these new keys by TMA: Hopper or later, not the interpreter,
    16-bit values, 16-byte aligned bases and rows."""
    if new_kv is None or not hopper_or_later(new_kv[0].device):
        return False
    return all(t.element_size() == 2 and tma_aligned(t) for t in new_kv)


def _new_key_source(
    k_cache: torch.Tensor,
    new_kv: tuple[torch.Tensor, torch.Tensor] | None,
    tma: bool,
    block_n: int,
) -> tuple[int, object, object]:
    """(NEW_SOURCE, new_k_ptr, new_v_ptr) of the launch: TMA descriptors, the tensors
    themselves (read by pointers), or the cache (no new_kv)."""
    if new_kv is None:
        return FROM_CACHE.value, k_cache, k_cache
    if not tma:
        return FROM_ROWS.value, new_kv[0], new_kv[1]
    from triton.tools.tensor_descriptor import TensorDescriptor

    num_tokens, num_kv_heads, head_dim = new_kv[0].shape
    width, block = num_kv_heads * head_dim, [block_n, head_dim]
    key, value = (TensorDescriptor(t, [num_tokens, width], [t.stride(0), 1], block) for t in new_kv)
    return FROM_TMA.value, key, value
