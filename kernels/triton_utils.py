"""Host-side helpers shared by the Triton kernel modules (argument checks, launch sizes)."""

from __future__ import annotations

import functools

import torch

from llmservice.kernels.reference import check_attention_shapes

# Triton's tl.dot needs every dimension to be at least this.
MIN_DOT_DIM = 16
# The attention kernels take exp2 of scores scaled by softmax_scale * log2(e).
LOG2E = 1.4426950408889634


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative integers."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(n - 1, 0).bit_length()


def require_last_dim_contiguous(**tensors: torch.Tensor) -> None:
    """Raises ValueError naming the first tensor whose last dimension is strided."""
    for name, tensor in tensors.items():
        if tensor.stride(-1) != 1:
            raise ValueError(f"{name} must have a contiguous last dimension (stride 1)")


def require_supported_head_dim(head_dim: int) -> None:
    """The attention kernels hold a whole head in a tile: 16, 32, 64 or 128 (the tested sizes)."""
    if head_dim not in (16, 32, 64, 128):
        raise ValueError(
            f"the Triton attention kernels support head_dim 16, 32, 64 or 128, got {head_dim}"
        )


def require_same_device(**tensors: torch.Tensor) -> None:
    """Raises ValueError unless every tensor lives on the same device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"tensors on different devices: {devices}")


def dot_precision(dtype: torch.dtype) -> str:
    """Exact float32 dots for float32 inputs (tests); 16-bit inputs ignore it."""
    return "ieee" if dtype == torch.float32 else "tf32"


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; an H100's 132 elsewhere (the interpreter)."""
    if device.type != "cuda":
        return 132
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def check_paged_attention_args(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    out: torch.Tensor | None,
) -> None:
    """The reference's shape checks plus what the Triton attention kernels need of layouts."""
    check_attention_shapes(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out)
    require_supported_head_dim(query.shape[2])
    require_same_device(
        query=query,
        k_cache=k_cache,
        v_cache=v_cache,
        block_tables=block_tables,
        seq_lens=seq_lens,
        query_start_loc=query_start_loc,
    )
    if k_cache.stride() != v_cache.stride():
        raise ValueError("k_cache and v_cache must have the same strides")
    require_last_dim_contiguous(query=query, k_cache=k_cache)
    if out is not None:
        require_last_dim_contiguous(out=out)
