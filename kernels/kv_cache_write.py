"""Triton kernel that stores the new tokens' keys and values into the paged KV cache."""

# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: @triton.jit is untyped and reads its parameters' annotations itself.)

from __future__ import annotations

import torch
import triton
import triton.language as tl

from llmservice.kernels.reference import check_kv_write_shapes
from llmservice.kernels.triton_utils import (
    next_power_of_2,
    pdl_launch_dependents,
    pdl_wait,
    require_last_dim_contiguous,
    require_same_device,
    use_pdl,
)


@triton.jit
def _write_kv_kernel(
    key_ptr,
    value_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    key_stride_t,
    key_stride_h,
    value_stride_t,
    value_stride_h,
    cache_stride_b,
    cache_stride_s,
    cache_stride_h,
    num_kv_heads,
    BLOCK_SIZE: tl.constexpr,
    HEADS_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    PDL: tl.constexpr,  # launched with programmatic dependent launch (triton_utils)
):
    pdl_launch_dependents(PDL)
    # NOTE: every program waits, padding ones included: the kernels after this one count on its
    # completion meaning that everything before it has completed too.
    pdl_wait(PDL)
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return  # padding token
    offs_h = tl.arange(0, HEADS_PAD)[:, None]
    offs_d = tl.arange(0, HEAD_DIM_PAD)[None, :]
    mask = (offs_h < num_kv_heads) & (offs_d < HEAD_DIM)
    cache = (slot // BLOCK_SIZE) * cache_stride_b + (slot % BLOCK_SIZE) * cache_stride_s
    cache += offs_h * cache_stride_h + offs_d
    key = tl.load(key_ptr + token * key_stride_t + offs_h * key_stride_h + offs_d, mask=mask)
    value = tl.load(
        value_ptr + token * value_stride_t + offs_h * value_stride_h + offs_d, mask=mask
    )
    tl.store(k_cache_ptr + cache, key.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + cache, value.to(v_cache_ptr.dtype.element_ty), mask=mask)


def write_kv_cache(
    key: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    value: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    slot_mapping: torch.Tensor,  # (num_tokens,) int64; a negative slot is skipped (padding)
) -> None:
    """reference.write_kv_cache on the GPU: one program per token."""
    check_kv_write_shapes(key, value, k_cache, v_cache, slot_mapping)
    require_same_device(key=key, value=value, k_cache=k_cache, slot_mapping=slot_mapping)
    require_last_dim_contiguous(key=key, value=value, k_cache=k_cache, v_cache=v_cache)
    if k_cache.stride() != v_cache.stride():
        raise ValueError("k_cache and v_cache must have the same strides")
    num_tokens, num_kv_heads, head_dim = key.shape
    if num_tokens == 0:
        return
    pdl = use_pdl(key.device)
    _write_kv_kernel[(num_tokens,)](
        key,
        value,
        k_cache,
        v_cache,
        slot_mapping,
        key.stride(0),
        key.stride(1),
        value.stride(0),
        value.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        num_kv_heads,
        BLOCK_SIZE=k_cache.shape[1],
        HEADS_PAD=next_power_of_2(num_kv_heads),
        HEAD_DIM=head_dim,
        HEAD_DIM_PAD=next_power_of_2(head_dim),
        PDL=pdl,
        num_warps=4,
        launch_pdl=pdl,
    )
