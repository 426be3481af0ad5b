"""`ModelConfig`: what the runtime needs to know of a model, read from its Hugging Face folder.

It reads `config.json` (both the transformers 4 layout, `rope_theta` + `rope_scaling`, and the
transformers 5 layout, `rope_parameters`) and `generation_config.json` (EOS ids), checks that the
architecture is one we serve, and resolves `dtype="auto"` and `max_model_len`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from llmservice.runtime.models.registry import get_architecture_traits

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "half": torch.float16,
}
_ROPE_TYPES = ("default", "linear", "llama3")
_REQUIRED_SIZES = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)


@dataclass(frozen=True, slots=True)
class RopeConfig:
    """Rotary position embedding parameters (HF `rope_parameters`)."""

    theta: float
    """Base of the inverse frequencies."""
    rope_type: str = "default"
    """"default", "linear" or "llama3" (Llama 3.1 frequency-dependent scaling)."""
    factor: float = 1.0
    """Scaling factor of "linear" and "llama3"."""
    low_freq_factor: float = 1.0
    """llama3: wavelengths above original_max_position_embeddings / this are scaled by factor."""
    high_freq_factor: float = 4.0
    """llama3: wavelengths below original_max_position_embeddings / this are kept."""
    original_max_position_embeddings: int = 8192
    """llama3: the context length the model was pre-trained with."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The shape and numerics of a decoder-only model."""

    path: str
    """The model folder (config.json, safetensors, tokenizer files)."""
    architecture: str
    """`architectures[0]` of config.json, a key of the model registry."""
    vocab_size: int
    """Rows of the embedding and of the LM head."""
    hidden_size: int
    """Width of the residual stream."""
    intermediate_size: int
    """Width of the MLP's hidden layer."""
    num_layers: int
    """Decoder layers."""
    num_heads: int
    """Query heads."""
    num_kv_heads: int
    """Key/value heads (grouped-query attention when fewer than num_heads)."""
    head_dim: int
    """Width of one attention head."""
    rms_norm_eps: float
    """Epsilon of every RMSNorm."""
    rope: RopeConfig
    """Rotary embedding parameters."""
    max_position_embeddings: int
    """Positions the model supports (config.json)."""
    max_model_len: int
    """Tokens per sequence (prompt + output) this engine accepts."""
    dtype: torch.dtype
    """Weights and activations dtype."""
    tie_word_embeddings: bool
    """The LM head shares the embedding matrix."""
    qkv_bias: bool
    """Bias on the q/k/v projections."""
    o_bias: bool
    """Bias on the attention output projection."""
    mlp_bias: bool
    """Bias on the MLP projections."""
    qk_norm: bool
    """Per-head RMSNorm on q and k (Qwen3)."""
    eos_token_ids: tuple[int, ...]
    """Token ids that end generation (generation_config.json, else config.json)."""

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: str = "auto", max_model_len: int | None = None
    ) -> ModelConfig:
        """Read `path/config.json` (+ generation_config.json); ValueError on what we cannot serve."""
        folder = Path(path)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"no config.json in model folder {str(folder)!r}")
        cfg: dict[str, Any] = json.loads(config_file.read_text())
        architectures = cfg.get("architectures") or []
        if not architectures:
            raise ValueError(f"{config_file}: 'architectures' is missing or empty")
        architecture = str(architectures[0])
        traits = get_architecture_traits(architecture)
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{config_file}: hidden_act {cfg['hidden_act']!r} is not supported")
        for key in _REQUIRED_SIZES:
            value = cfg.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{config_file}: {key} must be a positive integer, got {value!r}")
        num_heads = int(cfg["num_attention_heads"])
        num_kv_heads = int(cfg.get("num_key_value_heads") or num_heads)
        if num_heads % num_kv_heads != 0:
            raise ValueError(
                f"{config_file}: num_attention_heads ({num_heads}) must be a multiple of "
                f"num_key_value_heads ({num_kv_heads})"
            )
        hidden_size = int(cfg["hidden_size"])
        attention_bias = bool(cfg.get("attention_bias", False))
        max_positions = int(cfg.get("max_position_embeddings", 2048))
        return cls(
            path=str(folder),
            architecture=architecture,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden_size,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=int(cfg.get("head_dim") or hidden_size // num_heads),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope=_parse_rope(cfg, config_file),
            max_position_embeddings=max_positions,
            max_model_len=_resolve_max_model_len(cfg, max_positions, max_model_len),
            dtype=_resolve_dtype(dtype, cfg),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=attention_bias if traits.qkv_bias is None else traits.qkv_bias,
            o_bias=attention_bias if traits.o_bias is None else traits.o_bias,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            qk_norm=traits.qk_norm,
            eos_token_ids=_read_eos_token_ids(folder, cfg),
        )


def parse_dtype(name: str) -> torch.dtype:
    """A dtype name ("float32", "bfloat16", "float16") as a torch dtype; ValueError otherwise."""
    dtype = _DTYPES.get(name.removeprefix("torch."))
    if dtype is None:
        raise ValueError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got {name!r}")
    return dtype


def _resolve_dtype(dtype: str, cfg: dict[str, Any]) -> torch.dtype:
    if dtype != "auto":
        return parse_dtype(dtype)
    # transformers 5 writes "dtype", transformers 4 "torch_dtype"; float32 when neither is set.
    return parse_dtype(str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32"))


def _resolve_max_model_len(cfg: dict[str, Any], max_positions: int, requested: int | None) -> int:
    limit = max_positions
    # NOTE: the decoder attends to the whole context. With a sliding window (Mistral v0.1, Qwen2
    # with use_sliding_window) that equals the model's own attention only within the window, so
    # sequences are capped at the window rather than silently computed differently.
    window = cfg.get("sliding_window")
    if window and (cfg.get("use_sliding_window", True)):
        limit = min(limit, int(window))
    if requested is None:
        return limit
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 2:
        raise ValueError(f"max_model_len must be an integer >= 2, got {requested!r}")
    if requested > limit:
        raise ValueError(
            f"max_model_len ({requested}) is larger than the model supports ({limit}: "
            "max_position_embeddings, or the sliding window)"
        )
    return requested


def _parse_rope(cfg: dict[str, Any], config_file: Path) -> RopeConfig:
    params: dict[str, Any] = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = str(params.get("rope_type") or params.get("type") or "default")
    if rope_type not in _ROPE_TYPES:
        raise ValueError(
            f"{config_file}: rope_type {rope_type!r} is not supported "
            f"(supported: {', '.join(_ROPE_TYPES)})"
        )
    if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(f"{config_file}: partial_rotary_factor is not supported")
    if rope_type == "default":
        return RopeConfig(theta=theta)
    return RopeConfig(
        theta=theta,
        rope_type=rope_type,
        factor=float(params["factor"]),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(
            params.get("original_max_position_embeddings", cfg.get("max_position_embeddings", 8192))
        ),
    )


def _read_eos_token_ids(folder: Path, cfg: dict[str, Any]) -> tuple[int, ...]:
    eos: object = None
    generation_file = folder / "generation_config.json"
    if generation_file.is_file():
        eos = json.loads(generation_file.read_text()).get("eos_token_id")
    if eos is None:
        eos = cfg.get("eos_token_id")
    if eos is None:
        return ()
    if isinstance(eos, int):
        return (eos,)
    return tuple(int(token_id) for token_id in cast("list[int]", eos))
