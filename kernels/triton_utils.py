"""Helpers shared by the Triton kernel modules: argument checks, launch sizes, and programmatic
dependent launch (PDL).

PDL (Hopper and later): a kernel launched with `launch_pdl=True` may start while the kernel
before it in the stream is still running, once every program of that one has called
`pdl_launch_dependents` (or exited). Its programs can then do the work that depends on no
earlier kernel (the weights' first loads) and must call `pdl_wait` before they read anything an
earlier kernel wrote or write anything an earlier kernel reads. At batch 1 a decode step is ~320
short kernels, and each otherwise starts only after the previous one has fully drained.
"""

# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: @triton.jit is untyped and reads its parameters' annotations itself.)

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

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


PDL_ENV = "LLMSERVICE_PDL"
"""Set to 0 to launch every kernel without PDL (for comparisons, or a driver that misbehaves)."""


def use_pdl(device: torch.device) -> bool:
    """Whether kernels on `device` launch with PDL: a CUDA device of compute capability 9.0 or
    later, a Triton with the grid-dependency intrinsics, not the interpreter, not switched off
    by LLMSERVICE_PDL=0 (read at every launch, so a captured CUDA graph keeps what it saw)."""
    if os.environ.get(PDL_ENV, "1") == "0":
        return False
    return hopper_or_later(device) and hasattr(tl.extra.cuda, "gdc_wait")


def hopper_or_later(device: torch.device) -> bool:
    """Whether compiled Triton kernels on `device` may use Hopper's features (PDL, TMA): an
    NVIDIA device of compute capability 9.0 or later, and not the interpreter."""
    if device.type != "cuda":
        return False
    return _hopper_or_later(
        device.index if device.index is not None else torch.cuda.current_device()
    )


def tma_aligned(t: torch.Tensor) -> bool:
    """Whether a TMA descriptor may cover `t` as it is laid out: a unit last stride, a 16-byte
    aligned base and every other stride a multiple of 16 bytes."""
    size = t.element_size()
    return (
        t.stride(-1) == 1
        and t.data_ptr() % 16 == 0
        and all(stride * size % 16 == 0 for stride in t.stride()[:-1])
    )


@functools.cache
def _hopper_or_later(device_index: int) -> bool:
    return (
        torch.version.hip is None  # ROCm reports gfx9 parts as capability 9.x
        and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
        and torch.cuda.get_device_capability(device_index) >= (9, 0)
    )


@triton.jit
def pdl_wait(ENABLED: tl.constexpr):
    """Blocks until every earlier kernel of the stream has completed and its writes are visible
    (griddepcontrol.wait); a no-op unless ENABLED (the kernel was launched with PDL)."""
    if ENABLED:
        tl.extra.cuda.gdc_wait()


@triton.jit
def pdl_launch_dependents(ENABLED: tl.constexpr):
    """Lets the next kernel of the stream start its programs once every program of this one has
    called this (griddepcontrol.launch_dependents); a no-op unless ENABLED."""
    if ENABLED:
        tl.extra.cuda.gdc_launch_dependents()


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
