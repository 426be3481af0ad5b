"""A tiny Llama checkpoint whose greedy output is known in advance (a "bigram machine").

Every layer's projections are zero, so attention and MLP add nothing and the last hidden state
is the embedding of the current token; the LM head then picks the next token from the current
one alone. Rows of the LM head for the tokens of a few chains are set so that, after the chain's
first token, the model writes the rest of the chain, whatever the sampling temperature:

- after `<|assistant|>`: `<` `think` `>` `a` `</` `thi` `nk>` `b` `<|end|>` -- a reasoning answer
  whose tags are split across tokens;
- after `<|go|>`: `Hello` `,` `World` `!` `<|end|>`.

Other tokens have random successors (a real distribution to sample from). The tokenizer is a
byte-level BPE (`tokenizers`) with a chat template in tokenizer_config.json.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ("<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|go|>")
PIECES = ("think", "</", "thi", "nk>", "Hello", "World")
REASONING_CHAIN = ("<|assistant|>", "<", "think", ">", "a", "</", "thi", "nk>", "b", "<|end|>")
HELLO_CHAIN = ("<|go|>", "Hello", ",", "World", "!", "<|end|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}"
    "{% if open_think is defined and open_think %}{{ '<think>' }}{% endif %}{% endif %}"
)
MAX_POSITIONS = 512
_HIDDEN = 64
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "numbers 0123456789 and punctuation , . ! ? ; :",
    "a reasoning model thinks before it answers",
] * 20


def build_tokenizer() -> Tokenizer:
    """Byte-level BPE with the chat specials and the chain pieces as whole tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    tokenizer.add_tokens([AddedToken(p, normalized=False, special=False) for p in PIECES])
    return tokenizer


def write_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Write config.json, model.safetensors and the tokenizer files into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save(str(folder / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size()
    end_id = tokenizer.token_to_id("<|end|>")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|end|>",
                "model_max_length": MAX_POSITIONS,
                "chat_template": CHAT_TEMPLATE,
            }
        )
    )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": _HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "eos_token_id": end_id,
        "dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_file(_weights(tokenizer, vocab, seed), str(folder / "model.safetensors"))
    return folder


def _weights(tokenizer: Tokenizer, vocab: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    embed = rng.standard_normal((vocab, _HIDDEN)).astype(np.float32)
    embed *= np.sqrt(_HIDDEN) / np.linalg.norm(embed, axis=1, keepdims=True)  # rms 1
    head = (rng.standard_normal((vocab, _HIDDEN)) / np.sqrt(_HIDDEN)).astype(np.float32)
    predecessors: dict[int, list[int]] = {}
    for chain in (REASONING_CHAIN, HELLO_CHAIN):
        ids = [_token_id(tokenizer, token) for token in chain]
        for current, following in itertools.pairwise(ids):
            predecessors.setdefault(following, []).append(current)
    for following, currents in predecessors.items():
        # logit about 40 for the successor of each predecessor, at most ~15 for any other token
        head[following] = 40.0 * embed[currents].sum(axis=0) / _HIDDEN
    weights = {
        "model.embed_tokens.weight": embed,
        "model.norm.weight": np.ones(_HIDDEN, np.float32),
        "lm_head.weight": head,
    }
    kv = 2 * (_HIDDEN // 4)
    shapes = {
        "self_attn.q_proj.weight": (_HIDDEN, _HIDDEN),
        "self_attn.k_proj.weight": (kv, _HIDDEN),
        "self_attn.v_proj.weight": (kv, _HIDDEN),
        "self_attn.o_proj.weight": (_HIDDEN, _HIDDEN),
        "mlp.gate_proj.weight": (128, _HIDDEN),
        "mlp.up_proj.weight": (128, _HIDDEN),
        "mlp.down_proj.weight": (_HIDDEN, 128),
    }
    for layer in range(2):
        prefix = f"model.layers.{layer}."
        for name, shape in shapes.items():
            weights[prefix + name] = np.zeros(shape, np.float32)
        weights[prefix + "input_layernorm.weight"] = np.ones(_HIDDEN, np.float32)
        weights[prefix + "post_attention_layernorm.weight"] = np.ones(_HIDDEN, np.float32)
    return weights


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:  # a byte-level base token ("<", ",", "a", ...)
        ids = tokenizer.encode(token).ids
        if len(ids) != 1:
            raise ValueError(f"{token!r} is not a single token: {ids}")
        token_id = ids[0]
    return token_id
