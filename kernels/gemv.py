"""Triton GEMV: `x @ weight.T (+ bias)` for one or two rows of x (decode batches of 1-2 tokens).

At batch 1 a decode step is the model's weights streaming through the projections once (16 GB
for Llama-3.1-8B), so every projection is bound by reading its weight matrix. One program owns
`block_n` output features and walks K in `block_k` chunks, keeping a float32 partial product per
(row, feature, k lane) that is reduced once at the end; both rows of x share each weight tile,
so the weight is read once whatever the batch.

The launch configuration of each (rows, N, K) comes from a table measured on the H100 against
cuBLAS (`kernels/bench.py --only gemv --sweep`) and, at 1 row, re-tuned inside the decode
step's kernel chain with PDL on (`kernels/bench_gemv_chain.py`). More rows than MAX_ROWS go to
torch's matmul (`ops.linear` decides from shapes alone). Nothing is tuned at run time: a tuning
run would land inside CUDA-graph capture.

On Hopper the kernel is launched with programmatic dependent launch (triton_utils.use_pdl): its
programs start while the kernel before it drains, load their first weight tile (which no kernel
writes), and only then wait for x. In CUDA-graph chains of same-shape calls on the H100 this
took 0.4-1.1 us off each call (qkv 19.2 -> 18.2 us at 2 rows, o 13.2 -> 12.8 at 1 row).
"""

# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: @triton.jit is untyped and reads its parameters' annotations itself.)

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from llmservice.kernels.reference import check_gemv_args
from llmservice.kernels.triton_utils import (
    cdiv,
    pdl_launch_dependents,
    pdl_wait,
    use_pdl,
)

MAX_ROWS = 2
"""The most rows of x one launch serves (they share each weight tile). A 4-row variant (four
accumulators) lost to cuBLAS at every Llama-3.1-8B shape on the H100 (BENCHMARKS.md)."""
FAST_DTYPES = (torch.bfloat16, torch.float16)
"""The dtypes the dispatcher sends here; float32 also runs (tests) but was not tuned."""


@dataclass(frozen=True)
class GemvConfig:
    """Launch parameters of the GEMV kernel."""

    block_n: int
    """Output features per program (a power of two)."""
    block_k: int
    """Reduction elements per loop iteration (a power of two)."""
    num_warps: int
    """Warps per program."""
    num_stages: int = 1
    """Triton's pipelining depth; the loop has no dot, so Triton 3.6 does not pipeline it
    (many resident programs keep the loads in flight instead)."""
    evict_first: bool = True
    """Load weights with L2 evict-first priority (streamed once per step). Measured, its
    effect depends on the tile: 8 x 1024 with 8 warps ran 11-24% slower with it, 2 x 1024 with
    4 warps at 2 rows 2-10% faster, most others within 3%."""


@triton.jit
def _row_dot(acc, w, x_row_ptr, lane_mask, ROW_VALID: tl.constexpr, MASKED: tl.constexpr):
    """acc += w * x_row (broadcast over features); a row past the batch contributes nothing."""
    if ROW_VALID:
        # x is loaded in the weight tile's shape (each feature row re-reads it from L1), so it
        # arrives in the tile's register layout: a (BLOCK_K,) load would be re-laid out through
        # shared memory, with a barrier, in every iteration.
        x_ptrs = tl.broadcast_to(x_row_ptr[None, :], w.shape)
        x = tl.load(x_ptrs, mask=lane_mask[None, :], other=0.0) if MASKED else tl.load(x_ptrs)
        acc += w * x.to(tl.float32)
    return acc


@triton.jit
def _load_tile(w_ptrs, feature_mask, lane_mask, MASKED: tl.constexpr, EVICTION: tl.constexpr):
    """One (BLOCK_N, BLOCK_K) weight tile in its storage dtype; masked lanes read as 0."""
    if MASKED:
        w_mask = feature_mask[:, None] & lane_mask[None, :]
        w = tl.load(w_ptrs, mask=w_mask, other=0.0, eviction_policy=EVICTION)
    else:
        w = tl.load(w_ptrs, eviction_policy=EVICTION)
    return w


@triton.jit
def _accumulate(
    acc0, acc1, w, x_ptrs, x_stride, lane_mask, ROWS: tl.constexpr, MASKED_K: tl.constexpr
):
    """Both rows' accumulators += the weight tile times their slice of x."""
    w = w.to(tl.float32)
    acc0 = _row_dot(acc0, w, x_ptrs, lane_mask, True, MASKED_K)
    acc1 = _row_dot(acc1, w, x_ptrs + x_stride, lane_mask, ROWS > 1, MASKED_K)
    return acc0, acc1


@triton.jit
def _row_store(acc, bias, out_row_ptr, feature_mask, ROW_VALID: tl.constexpr):
    if ROW_VALID:
        result = tl.sum(acc, axis=1) + bias  # (BLOCK_N,)
        tl.store(out_row_ptr, result.to(out_row_ptr.dtype.element_ty), mask=feature_mask)


@triton.jit
def _gemv_kernel(
    x_ptr,  # (ROWS, K), last dimension contiguous
    w_ptr,  # (N, K) contiguous
    bias_ptr,  # (N,), read when HAS_BIAS
    out_ptr,  # (ROWS, N), last dimension contiguous
    N,
    K,
    x_stride,
    out_stride,
    ROWS: tl.constexpr,  # 1 or 2: rows of x, sharing each weight tile
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    EVEN_N: tl.constexpr,  # N % BLOCK_N == 0: no feature mask on the weight loads
    EVEN_K: tl.constexpr,  # K % BLOCK_K == 0: no reduction mask
    HAS_BIAS: tl.constexpr,
    EVICTION: tl.constexpr,  # the weight loads' eviction policy ("" = default)
    PDL: tl.constexpr,  # launched with programmatic dependent launch (triton_utils)
):
    # NOTE: one 2-D accumulator per row rather than a (ROWS, BLOCK_N, BLOCK_K) tensor: in 3-D,
    # Triton lays the product out apart from the weight tile and moves every tile through
    # shared memory; in 2-D the tile is multiplied where it was loaded.
    pdl_launch_dependents(PDL)
    features = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    lanes = tl.arange(0, BLOCK_K)  # (BLOCK_K,)
    feature_mask = features < N
    masked = not (EVEN_K and EVEN_N)
    # int64 row offsets: N * K passes 2**31 for large vocabularies.
    w_ptrs = w_ptr + features.to(tl.int64)[:, None] * K + lanes[None, :]  # (BLOCK_N, BLOCK_K)
    x_ptrs = x_ptr + lanes  # row 0, (BLOCK_K,)
    # The weights depend on no earlier kernel: the first tile streams in while the kernel that
    # writes x is still draining. x is read only after the wait.
    w = _load_tile(w_ptrs, feature_mask, lanes < K, masked, EVICTION)  # (BLOCK_N, BLOCK_K)
    pdl_wait(PDL)
    acc0 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc0, acc1 = _accumulate(acc0, acc1, w, x_ptrs, x_stride, lanes < K, ROWS, not EVEN_K)
    for start in range(BLOCK_K, K, BLOCK_K):
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
        lane_mask = start + lanes < K
        w = _load_tile(w_ptrs, feature_mask, lane_mask, masked, EVICTION)
        acc0, acc1 = _accumulate(acc0, acc1, w, x_ptrs, x_stride, lane_mask, ROWS, not EVEN_K)
    bias = tl.zeros((BLOCK_N,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + features, mask=feature_mask, other=0.0).to(tl.float32)
    out_ptrs = out_ptr + features  # row 0, (BLOCK_N,)
    _row_store(acc0, bias, out_ptrs, feature_mask, True)
    _row_store(acc1, bias, out_ptrs + out_stride, feature_mask, ROWS > 1)


# Llama-3.1-8B's shapes: qkv (6144, 4096), o (4096, 4096), gate_up (28672, 4096), down
# (4096, 14336), lm_head (128256, 4096). Measured on the H100 with kernels/bench.py --only gemv
# --sweep (twice; a decode chain of calls replayed from a CUDA graph over rotating weights), the
# kernel beat cuBLAS at all five shapes at 1 and 2 rows (BENCHMARKS.md), so every shape takes
# the GEMV, with its row count's config: the fastest over the five shapes together, except
# where another config was faster by more than the run-to-run spread (~0.5 us). (Figures from
# before PDL; at 1 row the Llama layer shapes now take _TUNED's entries below.)
_GENERIC: dict[int, GemvConfig] = {
    # qkv 18.2 us (cuBLAS 20.3), o 13.5 (15.5), gate_up 76.9 (82.3), lm_head 332.6 (373.0)
    1: GemvConfig(block_n=8, block_k=1024, num_warps=8, evict_first=False),
    # qkv 19.2 (21.0), o 13.5 (15.5), gate_up 78.4 (81.8), down 41.1 (43.9), lm_head 335.8 (373.6)
    2: GemvConfig(block_n=2, block_k=1024, num_warps=4),
}
# With PDL on, the 1-row table was re-tuned where it counts, in the batch-1 decode step's kernel
# chain (kernels/bench_gemv_chain.py: 32 layers + lm_head in a CUDA graph, H100, 30 candidates a
# projection, each timed in the chain with the other projections on the table). 2048-wide k
# tiles won at all four layer projections (not investigated why; each program has half the
# loop iterations, and its first tile, loaded before the PDL wait, is twice as large); lm_head
# kept the generic config. The whole step: 5.515 -> 5.280 ms (medians of 5 captures each,
# interleaved; spreads 0.032 and 0.042 ms); W2 end to end on another H100, runs interleaved:
# 5.646 and 5.714 -> 5.522 and 5.558 ms per output token. Below, the chain's ms with only that
# projection changed (median of 3; with the previous config in parentheses):
_TUNED: dict[tuple[int, int, int], GemvConfig] = {
    (1, 6144, 4096): GemvConfig(block_n=8, block_k=2048, num_warps=8),  # qkv 5.479 (5.536)
    # o 5.449 (5.503)
    (1, 4096, 4096): GemvConfig(block_n=8, block_k=2048, num_warps=8, evict_first=False),
    (1, 28672, 4096): GemvConfig(block_n=4, block_k=2048, num_warps=4),  # gate_up 5.438 (5.492)
    # down 5.445 (5.493; that 16 x 1024, 8 warps, ran 41.2 us a call alone without PDL)
    (1, 4096, 14336): GemvConfig(block_n=4, block_k=2048, num_warps=4),
}


def choose_config(num_rows: int, n: int, k: int) -> GemvConfig | None:
    """The launch config for this shape, or None (more rows than MAX_ROWS: torch's matmul)."""
    if not 1 <= num_rows <= MAX_ROWS:
        return None
    return _TUNED.get((num_rows, n, k), _GENERIC[num_rows])


def serves(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether the dispatcher should send this projection here: at most MAX_ROWS rows, a tuned
    dtype and a layout the kernel reads. Reads metadata only (no device sync)."""
    return (
        x.dim() == 2
        and weight.dim() == 2
        and x.dtype in FAST_DTYPES
        and weight.dtype == x.dtype
        and x.shape[1] == weight.shape[1]
        and x.stride(1) == 1
        and weight.is_contiguous()
        and (bias is None or (bias.dtype == x.dtype and bias.is_contiguous()))
        and choose_config(x.shape[0], weight.shape[0], weight.shape[1]) is not None
    )


def gemv(
    x: torch.Tensor,  # (num_rows, K), 1 <= num_rows <= MAX_ROWS
    weight: torch.Tensor,  # (N, K) contiguous
    bias: torch.Tensor | None = None,  # (N,)
    out: torch.Tensor | None = None,  # (num_rows, N); any float dtype (float32 for logits)
    *,
    config: GemvConfig | None = None,
) -> torch.Tensor:
    """reference.gemv on the GPU: x @ weight.T (+ bias), float32 accumulation, rounded once."""
    check_gemv_args(x, weight, bias, out)
    num_rows, k = x.shape
    n = weight.shape[0]
    if not 1 <= num_rows <= MAX_ROWS:
        raise ValueError(f"gemv serves 1 to {MAX_ROWS} rows of x, got {num_rows}")
    if not weight.is_contiguous():
        raise ValueError("gemv needs a contiguous (row-major) weight")
    if x.stride(1) != 1 or (out is not None and out.stride(1) != 1):
        raise ValueError("gemv needs x and out with a contiguous last dimension")
    if bias is not None and not bias.is_contiguous():
        raise ValueError("gemv needs a contiguous bias")
    if out is None:
        out = torch.empty(num_rows, n, dtype=x.dtype, device=x.device)
    if n == 0:
        return out
    if config is None:
        config = _TUNED.get((num_rows, n, k), _GENERIC[num_rows])
    pdl = use_pdl(x.device)
    _gemv_kernel[(cdiv(n, config.block_n),)](
        x,
        weight,
        bias if bias is not None else weight,
        out,
        n,
        k,
        x.stride(0),
        out.stride(0),
        ROWS=num_rows,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        EVEN_N=n % config.block_n == 0,
        EVEN_K=k % config.block_k == 0,
        HAS_BIAS=bias is not None,
        EVICTION="evict_first" if config.evict_first else "",
        PDL=pdl,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        launch_pdl=pdl,
    )
    return out
