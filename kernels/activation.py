"""Triton SiLU-and-multiply, the gate of Llama-style MLPs: (..., 2 * d) -> (..., d)."""

# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: @triton.jit is untyped and reads its parameters' annotations itself.)

from __future__ import annotations

import torch
import triton
import triton.language as tl

from llmservice.kernels.triton_utils import (
    cdiv,
    pdl_launch_dependents,
    pdl_wait,
    require_last_dim_contiguous,
    use_pdl,
)

BLOCK = 1024


@triton.jit
def _silu_and_mul_kernel(
    x_ptr,
    out_ptr,
    x_stride,
    out_stride,
    d,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,  # launched with programmatic dependent launch (triton_utils)
):
    # The next kernel (the down projection) may start streaming its weights meanwhile.
    pdl_launch_dependents(PDL)
    pdl_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < d
    gate = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * x_stride + d + cols, mask=mask, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + row * out_stride + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """reference.silu_and_mul on the GPU, computed in float32."""
    if x.shape[-1] % 2:
        raise ValueError(f"silu_and_mul needs an even last dimension, got {x.shape[-1]}")
    require_last_dim_contiguous(x=x)
    d = x.shape[-1] // 2
    rows = x.reshape(-1, 2 * d)  # a view whenever the leading dimensions allow one
    out = torch.empty(rows.shape[0], d, dtype=x.dtype, device=x.device)
    if rows.shape[0] and d:
        pdl = use_pdl(x.device)
        _silu_and_mul_kernel[(rows.shape[0], cdiv(d, BLOCK))](
            rows, out, rows.stride(0), out.stride(0), d, BLOCK=BLOCK, PDL=pdl, num_warps=4,
            launch_pdl=pdl,
        )  # fmt: skip
    return out.view(*x.shape[:-1], d)
