"""ModelConfig from config.json: both transformers layouts, traits, dtype, lengths, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from llmservice.runtime.model_config import ModelConfig, RopeConfig
from llmservice.runtime.models.rotary import inverse_frequencies

_BASE: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}


def _write(folder: Path, **overrides: Any) -> Path:
    config = {**_BASE, **overrides}
    (folder / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if v is not None})
    )
    return folder


def test_transformers4_layout_with_llama3_rope_scaling(tmp_path: Path) -> None:
    scaling = {
        "type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 128,
    }
    config = ModelConfig.from_pretrained(
        _write(tmp_path, rope_theta=500000.0, rope_scaling=scaling, torch_dtype="bfloat16")
    )
    assert config.rope == RopeConfig(500000.0, "llama3", 8.0, 1.0, 4.0, 128)
    assert config.dtype == torch.bfloat16
    assert config.head_dim == 16 and config.max_model_len == 512


def test_transformers5_layout(tmp_path: Path) -> None:
    rope = {"rope_type": "default", "rope_theta": 1234.0}
    config = ModelConfig.from_pretrained(_write(tmp_path, rope_parameters=rope, dtype="float16"))
    assert config.rope == RopeConfig(theta=1234.0)
    assert config.dtype == torch.float16


def test_llama3_frequencies_match_transformers() -> None:
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    hf = LlamaConfig(hidden_size=128, num_attention_heads=2, rope_scaling=scaling)
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](hf, torch.device("cpu"))
    ours = inverse_frequencies(RopeConfig(10000.0, "llama3", 8.0, 1.0, 4.0, 64), head_dim=64)
    assert torch.equal(ours, expected)


def test_architecture_traits(tmp_path: Path) -> None:
    qwen2 = ModelConfig.from_pretrained(_write(tmp_path, architectures=["Qwen2ForCausalLM"]))
    assert (qwen2.qkv_bias, qwen2.o_bias, qwen2.qk_norm) == (True, False, False)
    qwen3 = ModelConfig.from_pretrained(
        _write(tmp_path, architectures=["Qwen3ForCausalLM"], attention_bias=True)
    )
    assert (qwen3.qkv_bias, qwen3.o_bias, qwen3.qk_norm) == (True, True, True)


def test_unknown_architecture_lists_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel.*LlamaForCausalLM.*Qwen3ForCausalLM"):
        ModelConfig.from_pretrained(_write(tmp_path, architectures=["GPT2LMHeadModel"]))


def test_missing_config_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        ModelConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0, "factor": 2.0}}, "yarn"),
        ({"hidden_act": "gelu"}, "gelu"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"vocab_size": None}, "vocab_size"),
    ],
)
def test_unservable_configs_are_rejected(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_pretrained(_write(tmp_path, **overrides))


def test_dtype_and_max_model_len_arguments(tmp_path: Path) -> None:
    folder = _write(tmp_path, sliding_window=300)
    config = ModelConfig.from_pretrained(folder, dtype="float16", max_model_len=100)
    assert config.dtype == torch.float16 and config.max_model_len == 100
    # A sliding window caps the length: beyond it, full attention would differ from the model's.
    assert ModelConfig.from_pretrained(folder).max_model_len == 300
    with pytest.raises(ValueError, match="max_model_len"):
        ModelConfig.from_pretrained(folder, max_model_len=301)
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig.from_pretrained(folder, dtype="int8")


def test_eos_ids_prefer_generation_config(tmp_path: Path) -> None:
    folder = _write(tmp_path, eos_token_id=2)
    assert ModelConfig.from_pretrained(folder).eos_token_ids == (2,)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 9]}))
    assert ModelConfig.from_pretrained(folder).eos_token_ids == (7, 9)
