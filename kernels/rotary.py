"""Triton NeoX-style ("rotate half") rotary embedding of queries and keys, in float32."""

# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: @triton.jit is untyped and reads its parameters' annotations itself.)

from __future__ import annotations

import torch
import triton
import triton.language as tl

from llmservice.kernels.reference import check_rotary_shapes
from llmservice.kernels.triton_utils import (
    next_power_of_2,
    pdl_launch_dependents,
    pdl_wait,
    require_last_dim_contiguous,
    require_same_device,
    use_pdl,
)


@triton.jit
def _rotate_heads(
    x_ptr, out_ptr, token, stride_t, stride_h, num_heads, cos, sin,
    HALF: tl.constexpr, HALF_PAD: tl.constexpr, HEADS_PAD: tl.constexpr,
):  # fmt: skip
    """Rotates every head of one token; out is contiguous (num_tokens, num_heads, 2 * HALF)."""
    offs_h = tl.arange(0, HEADS_PAD)[:, None]
    offs_j = tl.arange(0, HALF_PAD)[None, :]
    mask = (offs_h < num_heads) & (offs_j < HALF)
    src = x_ptr + token * stride_t + offs_h * stride_h + offs_j
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    dst = out_ptr + (token * num_heads + offs_h) * (2 * HALF) + offs_j
    tl.store(dst, (x1 * cos - x2 * sin).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, (x2 * cos + x1 * sin).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rotary_kernel(
    positions_ptr,
    query_ptr,
    key_ptr,
    cos_sin_ptr,
    query_out_ptr,
    key_out_ptr,
    query_stride_t,
    query_stride_h,
    key_stride_t,
    key_stride_h,
    cos_sin_stride,
    num_heads,
    num_kv_heads,
    HALF: tl.constexpr,
    HALF_PAD: tl.constexpr,
    HEADS_PAD: tl.constexpr,
    KV_HEADS_PAD: tl.constexpr,
    PDL: tl.constexpr,  # launched with programmatic dependent launch (triton_utils)
):
    pdl_launch_dependents(PDL)
    # Everything read here (positions, q, k) is written by earlier kernels or copies.
    pdl_wait(PDL)
    token = tl.program_id(0).to(tl.int64)
    position = tl.load(positions_ptr + token)
    offs_j = tl.arange(0, HALF_PAD)[None, :]
    cos = tl.load(cos_sin_ptr + position * cos_sin_stride + offs_j, mask=offs_j < HALF, other=0.0)
    sin = tl.load(
        cos_sin_ptr + position * cos_sin_stride + HALF + offs_j, mask=offs_j < HALF, other=0.0
    )
    _rotate_heads(
        query_ptr, query_out_ptr, token, query_stride_t, query_stride_h, num_heads, cos, sin,
        HALF, HALF_PAD, HEADS_PAD,
    )  # fmt: skip
    _rotate_heads(
        key_ptr, key_out_ptr, token, key_stride_t, key_stride_h, num_kv_heads, cos, sin,
        HALF, HALF_PAD, KV_HEADS_PAD,
    )  # fmt: skip


def rotary_embedding(
    positions: torch.Tensor,  # (num_tokens,) int64
    query: torch.Tensor,  # (num_tokens, num_heads, head_dim); any token/head strides
    key: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim); any token/head strides
    cos_sin_cache: torch.Tensor,  # (max_positions, head_dim) float32 = [cos | sin]
) -> tuple[torch.Tensor, torch.Tensor]:
    """reference.rotary_embedding on the GPU; returns new contiguous tensors."""
    check_rotary_shapes(positions, query, key, cos_sin_cache)
    require_same_device(positions=positions, query=query, key=key, cos_sin_cache=cos_sin_cache)
    require_last_dim_contiguous(query=query, key=key, cos_sin_cache=cos_sin_cache)
    num_tokens, num_heads, head_dim = query.shape
    num_kv_heads = key.shape[1]
    query_out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    key_out = torch.empty(key.shape, dtype=key.dtype, device=key.device)
    if num_tokens == 0:
        return query_out, key_out
    half = head_dim // 2
    pdl = use_pdl(query.device)
    _rotary_kernel[(num_tokens,)](
        positions,
        query,
        key,
        cos_sin_cache,
        query_out,
        key_out,
        query.stride(0),
        query.stride(1),
        key.stride(0),
        key.stride(1),
        cos_sin_cache.stride(0),
        num_heads,
        num_kv_heads,
        HALF=half,
        HALF_PAD=next_power_of_2(half),
        HEADS_PAD=next_power_of_2(num_heads),
        KV_HEADS_PAD=next_power_of_2(num_kv_heads),
        PDL=pdl,
        num_warps=4,
        launch_pdl=pdl,
    )
    return query_out, key_out
