"""Which Hugging Face architectures the runtime serves, and how each differs from the others.

One generic decoder (`decoder.py`) serves every architecture listed here; the differences are
data, not code: whether q/k/v (and o) projections carry a bias, and whether q and k are
RMS-normalised per head. The table is keyed by `architectures[0]` of `config.json`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ArchitectureTraits:
    """How one architecture departs from plain Llama."""

    qkv_bias: bool | None = None
    """Bias on the q/k/v projections; None reads `attention_bias` from config.json."""
    o_bias: bool | None = None
    """Bias on the output projection; None reads `attention_bias` from config.json."""
    qk_norm: bool = False
    """RMSNorm over head_dim on q and k before the rotary embedding (Qwen3)."""


ARCHITECTURES: dict[str, ArchitectureTraits] = {
    "LlamaForCausalLM": ArchitectureTraits(),
    "MistralForCausalLM": ArchitectureTraits(),
    # Qwen2/2.5 always has a q/k/v bias and never an o bias; its config has no attention_bias.
    "Qwen2ForCausalLM": ArchitectureTraits(qkv_bias=True, o_bias=False),
    "Qwen3ForCausalLM": ArchitectureTraits(qk_norm=True),
}


def get_architecture_traits(architecture: str) -> ArchitectureTraits:
    """The traits of a supported architecture; ValueError naming the supported ones otherwise."""
    traits = ARCHITECTURES.get(architecture)
    if traits is None:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unsupported model architecture {architecture!r}; supported: {supported}")
    return traits
