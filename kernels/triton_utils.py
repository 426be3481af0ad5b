"""Host-side helpers shared by the Triton kernel modules (argument checks, launch sizes)."""

from __future__ import annotations

import functools

import torch

# Triton's tl.dot needs every dimension to be at least this.
MIN_DOT_DIM = 16


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
