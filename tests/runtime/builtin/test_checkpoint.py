"""The shipped checkpoint: small, a plain Llama that transformers loads, with its EOS declared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from llmservice.runtime.builtin.chat_format import END


def test_the_checkpoint_is_at_most_25_mb(model_dir: Path) -> None:
    assert sum(p.stat().st_size for p in model_dir.iterdir()) <= 25_000_000


def test_it_is_a_grouped_query_llama_in_float32(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] < config["num_attention_heads"]
    assert config["max_position_embeddings"] == 512
    assert config["dtype"] == "float32"


def test_eos_is_the_end_tag_everywhere(model_dir: Path, hf_tokenizer: Any) -> None:
    end_id = hf_tokenizer.convert_tokens_to_ids(END)
    assert hf_tokenizer.eos_token_id == end_id
    assert json.loads((model_dir / "generation_config.json").read_text())["eos_token_id"] == end_id
    assert json.loads((model_dir / "config.json").read_text())["eos_token_id"] == end_id
    assert "chat_template" in json.loads((model_dir / "tokenizer_config.json").read_text())


def test_transformers_loads_it_and_answers(model_dir: Path, hf_tokenizer: Any) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert model.dtype == torch.float32
    assert 4e6 < model.num_parameters() < 6.25e6
    ids = hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 305 - 78?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=80, do_sample=False)
    reply = hf_tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert reply.endswith("</think>227")
