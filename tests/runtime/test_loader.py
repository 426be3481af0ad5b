"""Weights: sharded checkpoints, dummy weights, and clear errors for what is missing or wrong."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmservice import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=8)
PROMPT = {"prompt_token_ids": [5, 17, 33, 250, 7, 8]}


def _copy(checkpoints: dict[str, tuple[Path, Any]], arch: str, dest: Path) -> Path:
    folder = dest / arch
    shutil.copytree(checkpoints[arch][0], folder)
    return folder


def _hf_greedy(model: Any) -> list[int]:
    prompt = torch.tensor([PROMPT["prompt_token_ids"]])
    out = model.generate(prompt, max_new_tokens=8, do_sample=False)
    return out[0, prompt.shape[1] :].tolist()


def test_sharded_checkpoint_loads(
    checkpoints: dict[str, tuple[Path, Any]], make_llm: Callable[..., Any], tmp_path: Path
) -> None:
    model = checkpoints["qwen3"][1]
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    tokens = make_llm(tmp_path).generate(PROMPT, GREEDY)[0].outputs[0].token_ids
    assert tokens == _hf_greedy(model)


def test_missing_shard_is_named(
    checkpoints: dict[str, tuple[Path, Any]], make_llm: Callable[..., Any], tmp_path: Path
) -> None:
    checkpoints["llama"][1].save_pretrained(tmp_path, max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / shard).unlink()
    with pytest.raises(FileNotFoundError, match=shard):
        make_llm(tmp_path)


def test_no_weight_files(
    checkpoints: dict[str, tuple[Path, Any]], make_llm: Callable[..., Any], tmp_path: Path
) -> None:
    folder = _copy(checkpoints, "llama", tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"safetensors.*dummy"):
        make_llm(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop", "lacks tensors: model.layers.1.self_attn.k_proj.weight$"),
        ("extra", "unexpected tensor 'model.layers.9.mlp.up_proj.weight'"),
        ("reshape", r"'model.norm.weight' has shape \(63,\)"),
    ],
)
def test_bad_tensors_are_named(
    checkpoints: dict[str, tuple[Path, Any]],
    make_llm: Callable[..., Any],
    tmp_path: Path,
    change: str,
    message: str,
) -> None:
    folder = _copy(checkpoints, "mistral", tmp_path)
    tensors = load_file(folder / "model.safetensors")
    if change == "drop":
        del tensors["model.layers.1.self_attn.k_proj.weight"]
    elif change == "extra":
        tensors["model.layers.9.mlp.up_proj.weight"] = torch.zeros(2, 2)
    else:
        tensors["model.norm.weight"] = tensors["model.norm.weight"][:63].clone()
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ValueError, match=message):
        make_llm(folder)


def test_dummy_weights_from_config_alone(
    checkpoints: dict[str, tuple[Path, Any]], make_llm: Callable[..., Any], tmp_path: Path
) -> None:
    shutil.copy(checkpoints["qwen2"][0] / "config.json", tmp_path / "config.json")
    first = make_llm(tmp_path, load_format="dummy", seed=3)
    assert first.get_tokenizer() is None
    tokens = first.generate(PROMPT, GREEDY)[0].outputs[0].token_ids
    assert len(tokens) == 8
    # Same seed, same weights, same greedy tokens; text prompts need a tokenizer.
    again = make_llm(tmp_path, load_format="dummy", seed=3)
    assert again.generate(PROMPT, GREEDY)[0].outputs[0].token_ids == tokens
    assert first.generate(PROMPT, GREEDY)[0].outputs[0].text == ""
    with pytest.raises(ValueError, match="tokenizer"):
        first.generate("hello", GREEDY)


def test_unknown_architecture(
    checkpoints: dict[str, tuple[Path, Any]], make_llm: Callable[..., Any], tmp_path: Path
) -> None:
    folder = _copy(checkpoints, "llama", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["FalconForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"FalconForCausalLM.*supported: LlamaForCausalLM"):
        make_llm(folder)


def test_bad_engine_arguments(make_llm: Callable[..., Any], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_llm(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        make_llm("llama", tensor_parallel_size=2)
    with pytest.raises(ValueError, match="load_format"):
        make_llm("llama", load_format="pt")
    with pytest.raises(ValueError, match="max_num_seqs"):
        make_llm("llama", max_num_seqs=0)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_dtypes(
    checkpoints: dict[str, tuple[Path, Any]], make_llm: Callable[..., Any], dtype: str
) -> None:
    llm = make_llm("qwen3", dtype=dtype)
    weights = llm.engine_core.model_runner.model.parameters()
    assert {str(p.dtype) for p in weights} == {f"torch.{dtype}"}
    assert llm.engine_core.model_runner.kv_caches[0].dtype == getattr(torch, dtype)
    params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=1)
    completion = llm.generate(PROMPT, params)[0].outputs[0]
    assert len(completion.token_ids) == 8
    # Rounding may swap near-ties, so compare with float32 transformers within half precision.
    hf_model = checkpoints["qwen3"][1]
    with torch.no_grad():
        logits = hf_model(torch.tensor([PROMPT["prompt_token_ids"]])).logits[0, -1]
    expected = torch.log_softmax(logits.float(), dim=-1)
    first = completion.token_ids[0]
    assert float(expected[first]) >= float(expected.max()) - 0.05
    assert completion.logprobs is not None
    assert completion.logprobs[0][first].logprob == pytest.approx(float(expected[first]), abs=0.05)
