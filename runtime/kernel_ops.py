"""`KernelOps`: the set of kernels the model calls, chosen once at start-up.

Every implementation has the signatures of `llmservice.kernels.reference` (INTERFACES.md
section 3). "reference" (pure torch) runs on the CPU and the GPU; a Triton set registers itself
here under another name ("triton", the default on CUDA). The model never imports a kernel
module itself, so swapping the attention path changes no model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class PagedAttention(Protocol):
    """The signature of `reference.paged_attention`."""

    def __call__(
        self,
        query: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        block_tables: Tensor,
        seq_lens: Tensor,
        query_start_loc: Tensor,
        scale: float,
        out: Tensor | None = None,
        *,
        num_decodes: int = 0,
        new_kv: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor: ...


class CascadeAttention(Protocol):
    """The signature of `reference.cascade_attention`."""

    def __call__(
        self,
        query: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        block_tables: Tensor,
        seq_lens: Tensor,
        query_start_loc: Tensor,
        scale: float,
        prefix: Tensor,
        out: Tensor | None = None,
    ) -> Tensor: ...


@dataclass(frozen=True, slots=True)
class KernelOps:
    """One implementation of every kernel the decoder needs."""

    name: str
    """Registry name ("reference", ...)."""
    write_kv_cache: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], None]
    """(key, value, k_cache, v_cache, slot_mapping) -> None."""
    paged_attention: PagedAttention
    """(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale) -> out; the
    keywords `num_decodes` (leading one-token sequences) and `new_kv` (the new tokens' K/V as
    written to the cache) are hints: same result."""
    cascade_attention: CascadeAttention
    """paged_attention of a decode batch, reading shared prefix blocks once (+ prefix: a (2,)
    int32 device tensor of prefix_blocks and prefix_row, then out)."""
    rms_norm: Callable[[Tensor, Tensor, float], Tensor]
    """(x, weight, eps) -> normalised x."""
    fused_add_rms_norm: Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]]
    """(x, residual, weight, eps) -> (rms_norm(x + residual), x + residual)."""
    rotary_embedding: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
    """(positions, query, key, cos_sin_cache) -> (query, key) rotated."""
    linear: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    """(x, weight, bias) -> x @ weight.T (+ bias); decode-sized batches may take a GEMV."""
    linear_silu_and_mul: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    """(x, weight: [gate; up] rows, bias) -> silu(x @ gate.T) * (x @ up.T) (+ their biases): the
    gate/up half of a SwiGLU MLP."""
    fuses_gated_linear: Callable[[Tensor, Tensor, Tensor | None], bool]
    """(x, weight, bias) -> whether linear_silu_and_mul never holds the 2 * d-wide product
    (shapes and layouts only, no device sync)."""
    linear_add_: Callable[[Tensor, Tensor, Tensor | None, Tensor], Tensor]
    """(x, weight, bias, residual) -> residual += x @ weight.T (+ bias), in place."""
    fuses_residual_add: Callable[[Tensor, Tensor, Tensor | None], bool]
    """(x, weight, bias) -> whether linear_add_ adds inside the GEMM; otherwise the model leaves
    the add to fused_add_rms_norm (shapes only, no device sync)."""


def _from_module(name: str, module_name: str) -> KernelOps:
    module = importlib.import_module(module_name)
    return KernelOps(
        name=name,
        write_kv_cache=module.write_kv_cache,
        paged_attention=module.paged_attention,
        cascade_attention=module.cascade_attention,
        rms_norm=module.rms_norm,
        fused_add_rms_norm=module.fused_add_rms_norm,
        rotary_embedding=module.rotary_embedding,
        linear=module.linear,
        linear_silu_and_mul=module.linear_silu_and_mul,
        fuses_gated_linear=module.fuses_gated_linear,
        linear_add_=module.linear_add_,
        fuses_residual_add=module.fuses_residual_add,
    )


# name -> factory; factories import lazily so an unused backend costs nothing at start-up.
# "triton" is the dispatcher of kernels/ops.py: Triton kernels on CUDA tensors, the reference on
# CPU tensors, so a model built with it still runs (slowly) when moved to the CPU.
KERNEL_OPS: dict[str, Callable[[], KernelOps]] = {
    "reference": lambda: _from_module("reference", "llmservice.kernels.reference"),
    "triton": lambda: _from_module("triton", "llmservice.kernels.ops"),
}
# The kernel set each device type gets when none is named.
DEFAULT_KERNEL_OPS: dict[str, str] = {"cpu": "reference", "cuda": "triton"}


def register_kernel_ops(name: str, factory: Callable[[], KernelOps]) -> None:
    """Make another kernel set selectable by name (e.g. the Triton kernels on CUDA)."""
    KERNEL_OPS[name] = factory


def get_kernel_ops(name: str | None, device: torch.device) -> KernelOps:
    """The kernel set `name`, or the default for `device` when name is None."""
    chosen = name or DEFAULT_KERNEL_OPS.get(device.type, "reference")
    factory = KERNEL_OPS.get(chosen)
    if factory is None:
        raise ValueError(f"unknown kernel set {chosen!r}; known: {', '.join(sorted(KERNEL_OPS))}")
    return factory()
