"""The building blocks of a decoder layer: linear, RMSNorm, attention over the paged cache, MLP.

Parameters are created with `torch.empty` (no initialisation pass: the loader or the dummy
initialiser fills them), in the model's dtype, on the target device. Q/K/V and gate/up are
packed into one matrix each (one GEMM instead of three or two); the loader writes each HF tensor
into its row range (`packed_shards`).
"""

from __future__ import annotations

import torch
from torch import nn

from llmservice.runtime.attention_metadata import AttentionMetadata
from llmservice.runtime.kernel_ops import KernelOps
from llmservice.runtime.model_config import ModelConfig


class Linear(nn.Module):
    """y = x W^T (+ b), with uninitialised parameters; `ops.linear` picks the kernel (a GEMV
    for decode-sized batches on the GPU)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        ops: KernelOps,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.ops = ops
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, dtype=dtype, device=device), requires_grad=False
        )
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False)
            if bias
            else None
        )

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """`out` (rows of x, out_features), contiguous: written in place. Only batches larger
        than any GEMV's pass it, where ops.linear is torch's matmul anyway."""
        if out is None:
            return self.ops.linear(x, self.weight, self.bias)
        torch.matmul(x, self.weight.t(), out=out)
        if self.bias is not None:
            out += self.bias
        return out

    def add_to(
        self, x: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """This projection of x added to the residual stream: `(None, residual)` with the add
        done inside the GEMM (residual updated in place) where the kernel set does that, else
        `(projection, residual)`, the add left to the next norm (`RMSNorm.add_and_norm`)."""
        if self.ops.fuses_residual_add(x, self.weight, self.bias):
            return None, self.ops.linear_add_(x, self.weight, self.bias, residual)
        return self(x), residual


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale; with `residual`, adds it first and returns the new residual."""

    def __init__(
        self, size: int, eps: float, ops: KernelOps, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.empty(size, dtype=dtype, device=device), requires_grad=False
        )
        self.eps = eps
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.rms_norm(x, self.weight, self.eps)

    def add_and_norm(
        self, x: torch.Tensor | None, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rms_norm(x + residual), x + residual); x None: nothing is pending (`Linear.add_to`
        added it already), so (rms_norm(residual), residual)."""
        if x is None:
            return self(residual), residual
        return self.ops.fused_add_rms_norm(x, residual, self.weight, self.eps)


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE whose K/V live in a paged cache."""

    def __init__(self, config: ModelConfig, ops: KernelOps, device: torch.device) -> None:
        super().__init__()
        dtype = config.dtype
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_size = config.num_heads * config.head_dim
        self.kv_size = config.num_kv_heads * config.head_dim
        self.scale = config.head_dim**-0.5
        self.ops = ops
        hidden = config.hidden_size
        self.qkv_proj = Linear(
            hidden, self.q_size + 2 * self.kv_size, config.qkv_bias, ops, dtype, device
        )
        self.o_proj = Linear(self.q_size, hidden, config.o_bias, ops, dtype, device)
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if config.qk_norm:
            self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps, ops, dtype, device)
            self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps, ops, dtype, device)

    def forward(
        self,
        positions: torch.Tensor,  # (num_tokens,)
        x: torch.Tensor,  # (num_tokens, hidden), normed
        residual: torch.Tensor,  # (num_tokens, hidden)
        kv_cache: torch.Tensor,  # (2, num_blocks, block_size, num_kv_heads, head_dim)
        meta: AttentionMetadata,
        cos_sin_cache: torch.Tensor,  # (max_positions, head_dim)
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The output projection added to the residual stream (`Linear.add_to`)."""
        num_tokens = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.reshape(num_tokens, self.num_heads, self.head_dim)
        k = k.reshape(num_tokens, self.num_kv_heads, self.head_dim)
        v = v.reshape(num_tokens, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q = self.q_norm(q.reshape(-1, self.head_dim)).view_as(q)
            k = self.k_norm(k.reshape(-1, self.head_dim)).view_as(k)
        q, k = self.ops.rotary_embedding(positions, q, k, cos_sin_cache)
        k_cache, v_cache = kv_cache[0], kv_cache[1]
        # NOTE: the new tokens' K/V go into the cache first; attention then reads all context
        # (cached prefix and new tokens alike) from the cache.
        self.ops.write_kv_cache(k, v, k_cache, v_cache, meta.slot_mapping)
        args = (q, k_cache, v_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc)
        if meta.cascade_prefix is not None:
            out = self.ops.cascade_attention(
                *args, self.scale, meta.cascade_prefix
            )  # (num_tokens, num_heads, head_dim)
        else:
            out = self.ops.paged_attention(
                *args, self.scale, num_decodes=meta.num_decodes, new_kv=(k, v)
            )
        return self.o_proj.add_to(out.reshape(num_tokens, self.q_size), residual)


# Rows per pass through the MLP at most when the gate/up product is materialised (long batches
# are cut into equal chunks). A 16K-token prefill step would otherwise hold all its gate/up
# activations at once (2 x 14336 wide: 0.9 GiB for Llama-3.1-8B, plus 0.45 GiB after the SiLU),
# the largest activation peak of a step, which the KV cache is sized after; three chunks bring
# the MLP below the logits of 1024 sampled rows. GEMMs of ~5.5K rows still fill an H100. Where
# the kernel set fuses the SiLU into the gate/up GEMM (Hopper), the whole batch holds only the
# 14336-wide product, the same peak as a chunk, and goes through in one pass: the fused kernel
# at 16K rows beat three chunks of cuBLAS + SiLU (BENCHMARKS.md, "gate/up with SiLU").
MLP_CHUNK_TOKENS = 6144


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, ops: KernelOps, device: torch.device) -> None:
        super().__init__()
        size, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_up_proj = Linear(size, 2 * inner, bias, ops, config.dtype, device)
        self.down_proj = Linear(inner, size, bias, ops, config.dtype, device)
        self.ops = ops

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """x normed, (num_tokens, hidden) -> the MLP's output added to the residual stream
        (`Linear.add_to`)."""
        num_tokens = x.shape[0]
        gate_up = self.gate_up_proj
        if num_tokens <= MLP_CHUNK_TOKENS or self.ops.fuses_gated_linear(
            x, gate_up.weight, gate_up.bias
        ):
            return self.down_proj.add_to(self._product(x), residual)
        chunk = -(-num_tokens // -(-num_tokens // MLP_CHUNK_TOKENS))  # equal chunks
        down = self.down_proj
        # Each chunk's GEMM adds into its rows of the residual, or writes its rows of `out`
        # (straight into them: a copy per chunk cost ~1% of a 16K-token step).
        adds = self.ops.fuses_residual_add(x[:chunk], down.weight, down.bias)
        out = None if adds else torch.empty_like(x)  # (num_tokens, hidden)
        for start in range(0, num_tokens, chunk):
            end = min(start + chunk, num_tokens)
            product = self._product(x[start:end])
            if out is None:
                self.ops.linear_add_(product, down.weight, down.bias, residual[start:end])
            else:
                down(product, out[start:end])
        return out, residual

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj
        return self.ops.linear_silu_and_mul(x, gate_up.weight, gate_up.bias)
