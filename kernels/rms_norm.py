"""Triton RMSNorm, plain and fused with the residual add that precedes it in every layer."""

# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: @triton.jit is untyped and reads its parameters' annotations itself.)

from __future__ import annotations

import torch
import triton
import triton.language as tl

from llmservice.kernels.reference import check_norm_shapes
from llmservice.kernels.triton_utils import (
    next_power_of_2,
    pdl_launch_dependents,
    pdl_wait,
    require_last_dim_contiguous,
    use_pdl,
)

MAX_HIDDEN = 65536  # one program holds a whole row


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    residual_ptr,
    weight_ptr,
    out_ptr,
    residual_out_ptr,
    x_stride,
    residual_stride,
    hidden,
    eps,
    BLOCK: tl.constexpr,
    ADD_RESIDUAL: tl.constexpr,
    PDL: tl.constexpr,  # launched with programmatic dependent launch (triton_utils)
):
    pdl_launch_dependents(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden
    # The scale is a weight (no kernel writes it): loaded before waiting for x and residual.
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    pdl_wait(PDL)
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    if ADD_RESIDUAL:
        residual = tl.load(residual_ptr + row * residual_stride + cols, mask=mask, other=0.0)
        # Rounded to the input dtype before normalizing, as the unfused layers do.
        x = (x.to(tl.float32) + residual.to(tl.float32)).to(x_ptr.dtype.element_ty)
        tl.store(residual_out_ptr + row * hidden + cols, x, mask=mask)
    x = x.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(x * x, 0) / hidden + eps)
    out = x * inv_rms * weight
    tl.store(out_ptr + row * hidden + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def _launch(
    x: torch.Tensor,  # (..., hidden)
    residual: torch.Tensor | None,  # like x, or None for the plain norm
    weight: torch.Tensor,  # (hidden,)
    eps: float,
    out: torch.Tensor,  # (num_tokens, hidden), contiguous
    residual_out: torch.Tensor | None,  # (num_tokens, hidden), contiguous: x + residual
) -> None:
    check_norm_shapes(x, weight)
    require_last_dim_contiguous(x=x, weight=weight)
    hidden = x.shape[-1]
    if hidden > MAX_HIDDEN:
        raise ValueError(f"rms_norm supports a hidden size up to {MAX_HIDDEN}, got {hidden}")
    rows = x.reshape(-1, hidden)  # a view whenever the leading dimensions allow one
    residual_rows = rows
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
        require_last_dim_contiguous(residual=residual)
        residual_rows = residual.reshape(-1, hidden)
    if rows.shape[0] == 0:
        return
    block = next_power_of_2(hidden)
    pdl = use_pdl(x.device)
    _rms_norm_kernel[(rows.shape[0],)](
        rows,
        residual_rows,
        weight,
        out,
        residual_out if residual_out is not None else out,
        rows.stride(0),
        residual_rows.stride(0),
        hidden,
        eps,
        BLOCK=block,
        ADD_RESIDUAL=residual is not None,
        PDL=pdl,
        num_warps=min(16, max(1, block // 512)),
        launch_pdl=pdl,
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """reference.rms_norm on the GPU: one program per row, float32 math."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _launch(x, None, weight, eps, out.view(-1, x.shape[-1]), None)
    return out


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """reference.fused_add_rms_norm in one pass: returns (rms_norm(x + residual), x + residual)."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    summed = torch.empty_like(out)
    hidden = x.shape[-1]
    _launch(x, residual, weight, eps, out.view(-1, hidden), summed.view(-1, hidden))
    return out, summed
