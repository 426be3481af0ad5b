"""Trains `builtin:tiny-reasoner` from nothing, in one command, on one GPU.

    python -m llmservice.runtime.builtin.train --out DIR --seed 0

It draws a synthetic corpus (corpus.py) in parallel, learns a byte-level BPE on it
(tokenizer_train.py), trains a small LlamaForCausalLM with the loss on the assistant reply only
(bf16 autocast on a GPU, AdamW with warm-up and cosine decay) and writes a Hugging Face folder:
config.json, model.safetensors (float32), generation_config.json, tokenizer.json,
tokenizer_config.json (with the chat template) and training_summary.json. Last, it prints the
held-out accuracy through transformers' `generate`.

Everything is drawn from `--seed`: the corpus, the initial weights and the batch order. On a GPU
the kernels are asked to be deterministic (`torch.use_deterministic_algorithms`, warn-only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from llmservice.runtime.builtin.chat_format import END, PAD
from llmservice.runtime.builtin.corpus import sample_conversation, training_rng
from llmservice.runtime.builtin.dataset import EncodedCorpus, build_corpus, collate, plan_batches
from llmservice.runtime.builtin.tokenizer_train import (
    MAX_MODEL_LEN,
    save_tokenizer,
    train_tokenizer,
)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """What a training run is made of; every field is a command-line flag."""

    seed: int = 0
    """Seeds the corpus, the initial weights and the batch order."""
    num_samples: int = 2_500_000
    """Training conversations drawn (the defaults go through them about once)."""
    tokenizer_samples: int = 50_000
    """Conversations the BPE is learnt from."""
    vocab_size: int = 1024
    """Tokens of the BPE at most."""
    hidden_size: int = 256
    """Width of the model."""
    num_layers: int = 8
    """Decoder layers."""
    num_heads: int = 4
    """Attention heads (head_dim = hidden_size / num_heads)."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention, so the engine's GQA path is exercised)."""
    intermediate_size: int = 576
    """Width of the MLP."""
    steps: int = 3500
    """Optimizer steps."""
    batch_tokens: int = 65536
    """Tokens per step, padding included (batches group samples of similar length)."""
    lr: float = 2e-3
    """Peak learning rate."""
    warmup_steps: int = 200
    """Linear warm-up steps."""
    min_lr_ratio: float = 0.05
    """The cosine decays to this fraction of the peak."""
    weight_decay: float = 0.1
    """AdamW weight decay of the matrices."""
    workers: int = 0
    """Corpus processes (0 = one per CPU)."""


# --- model -----------------------------------------------------------------------------------


def build_model_config(config: TrainConfig, vocab_size: int, pad_id: int, eos_id: int) -> Any:
    """The transformers LlamaConfig of the model `config` describes."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.hidden_size // config.num_heads,
        max_position_embeddings=MAX_MODEL_LEN,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    floor = config.min_lr_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


# --- training --------------------------------------------------------------------------------


def train(config: TrainConfig, corpus: EncodedCorpus, model: Any, pad_id: int) -> list[float]:
    """Runs `config.steps` optimizer steps on `model` in place; returns the loss of every step."""
    import torch

    device = next(model.parameters()).device
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": matrices, "weight_decay": config.weight_decay},
            {"params": vectors, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    usable = np.flatnonzero(corpus.lengths <= MAX_MODEL_LEN)
    rng = np.random.default_rng(config.seed)
    epoch: list[np.ndarray] = []
    losses: list[float] = []
    pending: list[torch.Tensor] = []  # losses still on the device: read in groups, not per step
    start = time.perf_counter()
    model.train()
    for step in range(config.steps):
        if not epoch:
            epoch = plan_batches(corpus.lengths, usable, config.batch_tokens, rng)[::-1]
        input_ids, labels = (
            torch.from_numpy(a).pin_memory().to(device, non_blocking=True)
            if device.type == "cuda"
            else torch.from_numpy(a)
            for a in collate(corpus, epoch.pop(), pad_id)
        )
        lr = learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        pending.append(loss.detach())
        if (step + 1) % 100 == 0 or step + 1 == config.steps:
            losses.extend(torch.stack(pending).float().cpu().tolist())
            pending.clear()
            recent = losses[-100:]
            print(
                f"step {step + 1}/{config.steps}  loss {sum(recent) / len(recent):.4f}  "
                f"lr {lr:.2e}  {time.perf_counter() - start:.0f} s",
                flush=True,
            )
    model.eval()
    return losses


def _parse_args(argv: Sequence[str] | None) -> tuple[TrainConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint folder to write")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--eval-problems", type=int, default=500)
    parser.add_argument("--eval-batch-size", type=int, default=250)
    defaults = TrainConfig()
    for name in TrainConfig.__dataclass_fields__:
        default = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    config = TrainConfig(**{name: getattr(args, name) for name in TrainConfig.__dataclass_fields__})
    return config, args


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise RuntimeError(f"the trained tokenizer lacks the special token {token!r}")
    return int(token_id)


def main(argv: Sequence[str] | None = None) -> int:
    config, args = _parse_args(argv)
    began = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    from llmservice.runtime.builtin.chat_format import Message, render_prompt
    from llmservice.runtime.builtin.corpus import heldout_problems

    rng = training_rng(config.seed, 0)
    tokenizer = train_tokenizer(
        (
            s.prompt + s.target
            for s in (sample_conversation(rng) for _ in range(config.tokenizer_samples))
        ),
        config.vocab_size,
    )
    save_tokenizer(tokenizer, out)
    print(f"tokenizer: {tokenizer.get_vocab_size()} tokens", flush=True)
    problems = heldout_problems(args.eval_problems)
    heldout_prompts = frozenset(render_prompt([Message("user", p.question)]) for p in problems)
    corpus, overlap = build_corpus(
        config.seed, config.num_samples, config.workers, tokenizer.to_str(), heldout_prompts
    )
    too_long = int((corpus.lengths > MAX_MODEL_LEN).sum())
    print(
        f"corpus: {len(corpus.lengths)} conversations, {len(corpus.tokens)} tokens "
        f"(mean {corpus.lengths.mean():.1f}, max {corpus.lengths.max()}, {too_long} over "
        f"{MAX_MODEL_LEN} left out); {overlap} of the {len(problems)} held-out questions "
        f"also occur in it; "
        f"{time.perf_counter() - began:.0f} s",
        flush=True,
    )

    # Before CUDA starts: cuBLAS is deterministic only with a fixed workspace.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    from llmservice.runtime.builtin.evaluate import count_correct, encode_prompts, generate_hf

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    pad_id, eos_id = _token_id(tokenizer, PAD), _token_id(tokenizer, END)
    model_config = build_model_config(config, tokenizer.get_vocab_size(), pad_id, eos_id)
    model: Any = LlamaForCausalLM(model_config)  # type: ignore[no-untyped-call]
    model.to(device)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        eos_token_id=eos_id, pad_token_id=pad_id
    )
    num_params = sum(p.numel() for p in model.parameters())
    print(f"model: {num_params / 1e6:.2f} M parameters on {device}", flush=True)
    train_began = time.perf_counter()
    losses = train(config, corpus, model, pad_id)
    train_seconds = time.perf_counter() - train_began
    model.save_pretrained(out)

    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    prompts = encode_prompts(hf_tokenizer, [p.question for p in problems])
    generation = generate_hf(
        model, prompts, batch_size=args.eval_batch_size, eos_id=eos_id, pad_id=pad_id
    )
    correct = count_correct(hf_tokenizer, problems, generation)
    final_loss = sum(losses[-100:]) / len(losses[-100:])
    summary = {
        "command": " ".join(
            ["python -m llmservice.runtime.builtin.train", *(argv or sys.argv[1:])]
        ),
        "config": asdict(config),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "parameters": num_params,
        "conversations": len(corpus.lengths),
        "corpus_tokens": len(corpus.tokens),
        "heldout_questions_in_training": overlap,
        "train_seconds": round(train_seconds, 1),
        "final_loss": round(final_loss, 5),
        "heldout_problems": len(problems),
        "heldout_correct_transformers": correct,
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"held-out accuracy (transformers generate, greedy): {correct}/{len(problems)} = "
        f"{100 * correct / len(problems):.1f}%; final loss {final_loss:.4f}; "
        f"{summary['total_seconds']:.0f} s in all",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
