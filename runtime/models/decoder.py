"""The generic decoder-only transformer serving Llama 3.x, Mistral, Qwen2/2.5 and Qwen3.

The architectures differ only in data read from config.json (`ModelConfig`: attention biases,
per-head q/k norm, tied embeddings, RoPE variant), so one model class serves them all. Module
names follow Hugging Face's (`model.layers.N.self_attn...`) except the packed projections, so the
loader maps checkpoint names with one small table (`packed_shards`).

The forward pass is flat: the tokens of every sequence in the step are laid end to end
(`num_tokens` rows); `AttentionMetadata` tells attention where each sequence starts and which
paged-cache blocks hold its context.
"""

from __future__ import annotations

import torch
from torch import nn

from llmservice.runtime.attention_metadata import AttentionMetadata
from llmservice.runtime.kernel_ops import KernelOps
from llmservice.runtime.model_config import ModelConfig
from llmservice.runtime.models.layers import MLP, Attention, Linear, RMSNorm
from llmservice.runtime.models.rotary import build_cos_sin_cache


class DecoderLayer(nn.Module):
    """Pre-norm attention then pre-norm MLP, each with a residual connection."""

    def __init__(self, config: ModelConfig, ops: KernelOps, device: torch.device) -> None:
        super().__init__()
        eps, dtype = config.rms_norm_eps, config.dtype
        self.input_layernorm = RMSNorm(config.hidden_size, eps, ops, dtype, device)
        self.self_attn = Attention(config, ops, device)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, ops, dtype, device)
        self.mlp = MLP(config, ops, device)

    def forward(
        self,
        positions: torch.Tensor,  # (num_tokens,)
        pending: torch.Tensor | None,  # (num_tokens, hidden): not yet added to the residual
        residual: torch.Tensor,  # (num_tokens, hidden)
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        cos_sin_cache: torch.Tensor,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(pending, residual) in and out. A sublayer's output is added to the residual inside
        its last GEMM where the kernel set does that (long batches), else by the next norm's
        fused add (pending): `Linear.add_to`."""
        hidden, residual = self.input_layernorm.add_and_norm(pending, residual)
        pending, residual = self.self_attn(
            positions, hidden, residual, kv_cache, meta, cos_sin_cache
        )
        hidden, residual = self.post_attention_layernorm.add_and_norm(pending, residual)
        out: tuple[torch.Tensor | None, torch.Tensor] = self.mlp(hidden, residual)
        return out


class DecoderModel(nn.Module):
    """Embedding, decoder layers and the final norm (HF's `model.` prefix)."""

    def __init__(self, config: ModelConfig, ops: KernelOps, device: torch.device) -> None:
        super().__init__()
        weight = torch.empty(
            config.vocab_size, config.hidden_size, dtype=config.dtype, device=device
        )
        self.embed_tokens = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=weight, _freeze=True
        )
        self.layers = nn.ModuleList(
            DecoderLayer(config, ops, device) for _ in range(config.num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops, config.dtype, device)

    def forward(
        self,
        input_ids: torch.Tensor,  # (num_tokens,)
        positions: torch.Tensor,  # (num_tokens,)
        kv_caches: list[torch.Tensor],
        meta: AttentionMetadata,
        cos_sin_cache: torch.Tensor,
    ) -> torch.Tensor:
        # A fresh tensor (the layers may update the residual in place).
        residual = self.embed_tokens(input_ids)  # (num_tokens, hidden)
        pending: torch.Tensor | None = None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            pending, residual = layer(positions, pending, residual, kv_cache, meta, cos_sin_cache)
        hidden, _ = self.norm.add_and_norm(pending, residual)
        return hidden


class DecoderForCausalLM(nn.Module):
    """The decoder plus the LM head; the entry point the model runner calls."""

    def __init__(self, config: ModelConfig, ops: KernelOps, device: torch.device) -> None:
        super().__init__()
        self.config = config
        self.ops = ops
        self.model = DecoderModel(config, ops, device)
        # Tied embeddings: no lm_head parameter; the logits reuse the embedding matrix.
        self.lm_head: Linear | None = None
        if not config.tie_word_embeddings:
            self.lm_head = Linear(
                config.hidden_size, config.vocab_size, False, ops, config.dtype, device
            )
        # Not a parameter: computed from the config, never loaded.
        self.cos_sin_cache = build_cos_sin_cache(
            config.rope, config.head_dim, config.max_position_embeddings, device
        )

    def forward(
        self,
        input_ids: torch.Tensor,  # (num_tokens,) int64
        positions: torch.Tensor,  # (num_tokens,) int64
        kv_caches: list[torch.Tensor],  # one per layer
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """The final hidden states, (num_tokens, hidden)."""
        hidden: torch.Tensor = self.model(input_ids, positions, kv_caches, meta, self.cos_sin_cache)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(num_rows, hidden) -> (num_rows, vocab) float32 logits."""
        head = self.lm_head if self.lm_head is not None else self.model.embed_tokens
        return self.ops.linear(hidden, head.weight, None).float()

    def packed_shards(self) -> dict[str, tuple[str, int, int]]:
        """HF projection name -> (our packed name, first row, rows) inside the packed matrix."""
        c = self.config
        q, kv, inner = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
        return {
            "q_proj": ("qkv_proj", 0, q),
            "k_proj": ("qkv_proj", q, kv),
            "v_proj": ("qkv_proj", q + kv, kv),
            "gate_proj": ("gate_up_proj", 0, inner),
            "up_proj": ("gate_up_proj", inner, inner),
        }
