"""The gate/up projection of a SwiGLU MLP with the SiLU-and-multiply in its epilogue:
`silu(x @ W_gate.T) * (x @ W_up.T)` for the packed `[W_gate; W_up]` matrix of `gate_up_proj`.

Unfused, a 16K-token step writes the 2 x 14336-wide product (0.9 GiB at Llama-3.1-8B's size)
and the SiLU kernel reads it back: 15 ms of W3's ~410 ms step at HBM bandwidth, and the MLP had
to be cut into chunks to bound that activation. Here each tile of the result is computed from
a gate block and the matching up block in one accumulator and only the product is written.

One persistent program per SM walks the output tiles in grouped order (GROUP_M row tiles share
each weight tile while it is in L2), the tile and reduction loops flattened into one software
pipeline so the next tile's loads overlap this tile's epilogue (W3: 21.30-21.36 s against
21.43-21.50 without, in alternating runs). The weight is read through a 3-D TMA descriptor over its
(2, d, K) view: one load brings BLOCK_N/2 gate rows and the same up rows, which form the
(BLOCK_N, BLOCK_K) operand of a single 128 x 256 dot (a 2 x 128-wide accumulator pair ran 10%
slower). TMA also clips every edge, so no shape needs padding.

Measured on the H100 at Llama-3.1-8B's shape (K 4096, d 14336; BENCHMARKS.md, "gate/up with
SiLU"): in W3's step 176.7 ms against 186.3 for cuBLAS's GEMM plus the SiLU kernel; alone, at
1,024-16,384 rows, 1.00-1.22x their speed (stand-alone timings move by ~5% between runs under
the power limit), and slower at 512 rows (0.199 against 0.186 ms), hence MIN_ROWS. Hopper or
later only (TMA); elsewhere `ops` keeps the two kernels.
"""

# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: @triton.jit is untyped and reads its parameters' annotations itself.)

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from llmservice.kernels.reference import check_gated_linear_args
from llmservice.kernels.triton_utils import cdiv, hopper_or_later, num_sms, tma_aligned

MIN_ROWS = 1024
"""Fewer rows go to cuBLAS + the SiLU kernel (measured faster at 512 rows and below)."""


@dataclass(frozen=True)
class GatedLinearConfig:
    """Launch parameters of the fused gate/up kernel."""

    block_m: int = 128
    """Rows of x per tile."""
    block_n: int = 256
    """Columns of the accumulator per tile: block_n // 2 gate and as many up columns."""
    block_k: int = 64
    """Reduction elements per loop iteration."""
    group_m: int = 16
    """Row tiles that walk the weight's column tiles together (L2 reuse); 8 was 1-3% slower."""
    num_warps: int = 8
    num_stages: int = 3
    """4 stages of 128 x 256 x 64 need 256 KiB of shared memory, more than an SM has."""


DEFAULT_CONFIG = GatedLinearConfig()


# The row count changes with every step: one compiled variant serves them all (the profiling
# pass compiles it at start-up, so serving compiles nothing).
@triton.jit(do_not_specialize=["M", "num_programs"])
def _gated_linear_kernel(
    x_desc,  # (M, K)
    w_desc,  # (2, D, K): [gate; up]
    out_desc,  # (M, D)
    M,
    D,
    K,
    num_programs,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    HALF: tl.constexpr = BLOCK_N // 2
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(D, HALF)
    per_group = GROUP_M * num_n
    # flatten: one pipeline over (tile, k); alone 2-3% faster at W3's shapes than a pipeline
    # that drains and refills at every tile.
    for tile in tl.range(tl.program_id(0), num_m * num_n, num_programs, flatten=True):
        first_m = (tile // per_group) * GROUP_M
        group_rows = tl.minimum(num_m - first_m, GROUP_M)
        m0 = (first_m + (tile % per_group) % group_rows) * BLOCK_M
        n0 = ((tile % per_group) // group_rows) * HALF
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            # Rows [0, HALF) of the operand are gate rows n0.., rows [HALF, BLOCK_N) up rows n0..
            w = tl.reshape(w_desc.load([0, n0, k0]), (BLOCK_N, BLOCK_K))
            acc = tl.dot(x_desc.load([m0, k0]), w.T, acc)
        gate, up = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, HALF)), (0, 2, 1)))
        out_desc.store([m0, n0], (gate * tl.sigmoid(gate) * up).to(out_desc.dtype))


def serves(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether `linear_silu_and_mul` takes the fused kernel for these operands: Hopper or later
    (TMA), at least MIN_ROWS rows, no bias, 16-bit floats, 16-byte aligned bases and rows. Reads
    shapes, dtypes and layouts only (no device sync)."""
    if bias is not None or x.dim() != 2 or x.shape[0] < MIN_ROWS:
        return False
    if not hopper_or_later(x.device) or x.dtype not in (torch.bfloat16, torch.float16):
        return False
    if weight.dtype != x.dtype or weight.dim() != 2 or weight.shape[0] % 2:
        return False
    return weight.shape[1] == x.shape[1] and _tma_aligned(x, weight)


def _tma_aligned(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """TMA's layout rules for the three descriptors: x's rows, the packed weight (read through
    its contiguous (2, d, K) view) and the (rows, d) result."""
    d = weight.shape[0] // 2
    return (
        tma_aligned(x)
        and weight.is_contiguous()
        and tma_aligned(weight)
        and d * x.element_size() % 16 == 0
    )


def linear_silu_and_mul(
    x: torch.Tensor,  # (M, K)
    weight: torch.Tensor,  # (2 * d, K): [gate; up]
    config: GatedLinearConfig = DEFAULT_CONFIG,
) -> torch.Tensor:
    """reference.linear_silu_and_mul without bias, float32 accumulation, one launch. Runs on
    TMA descriptors, so on Hopper or later or in the interpreter."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    check_gated_linear_args(x, weight, None)
    rows, k = x.shape
    d = weight.shape[0] // 2
    if not _tma_aligned(x, weight):
        raise ValueError(
            "linear_silu_and_mul needs 16-byte aligned bases and rows (TMA), got x "
            f"{tuple(x.shape)} with row stride {x.stride(0)}, weight {tuple(weight.shape)}, "
            f"{x.dtype}"
        )
    out = torch.empty(rows, d, dtype=x.dtype, device=x.device)
    if rows == 0 or d == 0:
        return out
    c = config
    half = c.block_n // 2
    x_desc = TensorDescriptor(x, [rows, k], [x.stride(0), 1], [c.block_m, c.block_k])
    w_desc = TensorDescriptor(weight, [2, d, k], [d * k, k, 1], [2, half, c.block_k])
    out_desc = TensorDescriptor(out, [rows, d], [d, 1], [c.block_m, half])
    tiles = cdiv(rows, c.block_m) * cdiv(d, half)
    # The interpreter gets a few programs, so the persistent loop runs several tiles.
    programs = min(tiles, num_sms(x.device) if x.is_cuda else 4)
    _gated_linear_kernel[(programs,)](
        x_desc, w_desc, out_desc, rows, d, k, programs,
        BLOCK_M=c.block_m, BLOCK_N=c.block_n, BLOCK_K=c.block_k, GROUP_M=c.group_m,
        num_warps=c.num_warps, num_stages=c.num_stages,
    )  # fmt: skip
    return out
