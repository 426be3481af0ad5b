"""The rotary-embedding table: `cos_sin_cache` rows of [cos | sin] for every position.

The kernels (`rotary_embedding`) read this table by position; only the inverse frequencies
differ between RoPE variants. "llama3" follows Llama 3.1's frequency-dependent scaling (the same
arithmetic as transformers' `_compute_llama3_parameters`, so outputs match it exactly).
"""

from __future__ import annotations

import math

import torch

from llmservice.runtime.model_config import RopeConfig


def inverse_frequencies(rope: RopeConfig, head_dim: int) -> torch.Tensor:
    """The (head_dim // 2,) float32 inverse frequencies of a RoPE variant."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
    inv_freq = 1.0 / (rope.theta**exponents)  # (head_dim // 2,)
    if rope.rope_type == "linear":
        return inv_freq / rope.factor
    if rope.rope_type != "llama3":
        return inv_freq
    old_len = rope.original_max_position_embeddings
    low_freq_wavelen = old_len / rope.low_freq_factor
    high_freq_wavelen = old_len / rope.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are divided by factor, short ones kept, the band between interpolated.
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq)
    smooth = (old_len / wavelen - rope.low_freq_factor) / (
        rope.high_freq_factor - rope.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def build_cos_sin_cache(
    rope: RopeConfig, head_dim: int, max_positions: int, device: torch.device
) -> torch.Tensor:
    """The (max_positions, head_dim) float32 table [cos | sin] (each head_dim // 2 wide)."""
    inv_freq = inverse_frequencies(rope, head_dim)
    positions = torch.arange(max_positions, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)  # (max_positions, head_dim // 2)
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(device)
