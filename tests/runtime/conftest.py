"""Tiny random checkpoints made with transformers, shared by the engine tests.

One checkpoint per served architecture (hidden 64, 2 layers, 4 heads, 2 KV heads, vocab 300,
float32), each exercising its own trait: Llama with llama3 RoPE scaling and tied embeddings,
Mistral, Qwen2 with q/k/v biases and tied embeddings, Qwen3 with q/k norms and a head_dim that
is not hidden / heads. Norm weights and biases are randomised (HF initialises them to 1 and 0,
which would hide a loader that drops them). A separate Llama checkpoint ships a byte-level BPE
tokenizer (built with `tokenizers`) with a chat template, for the text-level tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

VOCAB = 300
EOS = 2
_COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "initializer_range": 0.05,
    "bos_token_id": 1,
    "eos_token_id": EOS,
    "pad_token_id": 0,
}
ARCHITECTURES: dict[str, tuple[type, type, dict[str, Any]]] = {
    "llama": (
        LlamaConfig,
        LlamaForCausalLM,
        {
            "tie_word_embeddings": True,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        },
    ),
    "mistral": (MistralConfig, MistralForCausalLM, {"tie_word_embeddings": False}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {"tie_word_embeddings": True}),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"tie_word_embeddings": False, "head_dim": 32}),
}
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello engine; paged attention and continuous batching",
    "numbers 0123456789 and punctuation , . ! ? ; :",
] * 20


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; on a busy shared CPU, several threads spin-wait
    on each other and make every small op ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _randomise_norms_and_biases(model: PreTrainedModel, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name:
                param.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                param.copy_(0.2 * noise)


def make_checkpoint(folder: Path, arch: str, seed: int = 0, **overrides: Any) -> PreTrainedModel:
    """Save a random float32 checkpoint of `arch` to `folder`; returns the HF model."""
    config_cls, model_cls, extra = ARCHITECTURES[arch]
    config = config_cls(**{**_COMMON, **extra, **overrides})
    torch.manual_seed(seed)
    model = model_cls(config).float().eval()
    _randomise_norms_and_biases(model, seed)
    model.save_pretrained(folder)
    return model


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE of exactly VOCAB ids with chat specials and a chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    hf_tokenizer.chat_template = CHAT_TEMPLATE
    return hf_tokenizer


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """arch -> (checkpoint folder, the HF model it was saved from)."""
    root = tmp_path_factory.mktemp("checkpoints")
    result = {}
    for seed, arch in enumerate(ARCHITECTURES):
        folder = root / arch
        result[arch] = (folder, make_checkpoint(folder, arch, seed=seed))
    return result


@pytest.fixture(scope="session")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama checkpoint with a byte-level BPE tokenizer and a chat template."""
    folder = tmp_path_factory.mktemp("text_model")
    tokenizer = build_tokenizer()
    if len(tokenizer) != VOCAB:
        raise RuntimeError(f"the test tokenizer has {len(tokenizer)} ids, expected {VOCAB}")
    make_checkpoint(folder, "llama", seed=7, bos_token_id=1, eos_token_id=2)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer(text_model: Path) -> Any:
    """The text model's tokenizer (llmservice's wrapper)."""
    from llmservice.runtime.tokenizer import Tokenizer

    return Tokenizer.from_folder(text_model)


@pytest.fixture(scope="session")
def make_llm(checkpoints: dict[str, tuple[Path, Any]]) -> Callable[..., Any]:
    """make_llm(arch_or_path, **LLM kwargs) -> an LLM on the CPU."""
    from llmservice import LLM

    def make(model: str | Path, **kwargs: Any) -> Any:
        path = checkpoints[model][0] if model in checkpoints else model
        return LLM(str(path), device="cpu", **kwargs)

    return make
