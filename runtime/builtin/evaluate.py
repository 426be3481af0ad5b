"""Held-out accuracy and CPU speed of the built-in model, through our `LLM` or transformers.

    python -m llmservice.runtime.builtin.evaluate                    # 500 problems, our LLM, CPU
    python -m llmservice.runtime.builtin.evaluate --backend hf       # the same through transformers
    python -m llmservice.runtime.builtin.evaluate --backend both     # both, and compares outputs

The problems come from `corpus.heldout_problems` (a seed stream the trainer never draws from).
Each is asked as the user turn of the chat template and decoded greedily, in batches; the answer
is the text after `</think>`, and it must equal the exact result.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmservice.runtime.builtin import resolve_model_path
from llmservice.runtime.builtin.chat_format import Message, render_prompt, split_answer
from llmservice.runtime.builtin.corpus import HELDOUT_SEED, Exchange, heldout_problems

# The longest working of the corpus is about 320 tokens; a reply never needs more than this.
MAX_NEW_TOKENS = 400


@dataclass(frozen=True, slots=True)
class Generation:
    """The greedy replies to a list of prompts and how long they took."""

    token_ids: list[list[int]]
    """Each reply's tokens, without the EOS that ended it."""
    seconds: float
    """Wall time of the whole generation."""
    cpu_seconds: float
    """CPU time of this process (all its threads) over the same span: on a shared machine,
    wall time counts the other processes' turns too, CPU time does not."""

    @property
    def num_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)


def encode_prompts(tokenizer: Any, questions: Sequence[str]) -> list[list[int]]:
    """Each question as the single user turn of the chat template, with the generation prompt."""
    texts = [render_prompt([Message("user", q)]) for q in questions]
    return [list(tokenizer.encode(t, add_special_tokens=False)) for t in texts]


def _strip_eos(ids: Sequence[int], eos_id: int) -> list[int]:
    ids = list(ids)
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def generate_hf(
    model: Any,
    prompts: Sequence[list[int]],
    *,
    batch_size: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> Generation:
    """Greedy replies through transformers' `generate`, left-padded batches on the model's device."""
    device = next(model.parameters()).device
    replies: list[list[int]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for first in range(0, len(prompts), batch_size):
        batch = prompts[first : first + batch_size]
        width = max(len(p) for p in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (batch, width)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
            )
        replies.extend(_strip_eos(row[width:].tolist(), eos_id) for row in out)
    return Generation(replies, time.perf_counter() - start, time.process_time() - cpu_start)


def generate_llm(
    model_path: Path,
    prompts: Sequence[list[int]],
    *,
    batch_size: int,
    eos_id: int,
    device: str,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> Generation:
    """Greedy replies through our own `LLM`, `batch_size` prompts per `generate` call."""
    from llmservice.runtime.llm import LLM
    from llmservice.runtime.sampling_params import SamplingParams

    llm = LLM(model=str(model_path), device=device, max_num_seqs=max(batch_size, 1))
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0)
    replies: list[list[int]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for first in range(0, len(prompts), batch_size):
        batch = [{"prompt_token_ids": ids} for ids in prompts[first : first + batch_size]]
        outputs = llm.generate(batch, params)
        replies.extend(_strip_eos(out.outputs[0].token_ids, eos_id) for out in outputs)
    return Generation(replies, time.perf_counter() - start, time.process_time() - cpu_start)


def count_correct(tokenizer: Any, problems: Sequence[Exchange], generation: Generation) -> int:
    """How many replies end with exactly the problem's answer after `</think>`."""
    return sum(
        split_answer(tokenizer.decode(ids, skip_special_tokens=True)) == problem.answer
        for problem, ids in zip(problems, generation.token_ids, strict=True)
    )


def _report(name: str, correct: int, total: int, generation: Generation, batch_size: int) -> str:
    tokens = generation.num_tokens
    return (
        f"{name}: {correct}/{total} correct ({100 * correct / total:.1f}%), {tokens} tokens "
        f"at batch {batch_size} in {generation.seconds:.1f} s wall "
        f"({tokens / generation.seconds:.0f} tokens/s), {generation.cpu_seconds:.1f} s CPU "
        f"({tokens / generation.cpu_seconds:.0f} tokens per CPU second), "
        f"{torch.get_num_threads()} torch threads"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:tiny-reasoner")
    parser.add_argument("--backend", choices=("llm", "hf", "both"), default="llm")
    parser.add_argument("--num-problems", type=int, default=500)
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED, help="held-out stream seed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    problems = heldout_problems(args.num_problems, args.seed)
    prompts = encode_prompts(tokenizer, [p.question for p in problems])
    results: dict[str, Generation] = {}
    if args.backend in ("llm", "both"):
        results["llmservice LLM"] = generate_llm(
            path,
            prompts,
            batch_size=args.batch_size,
            eos_id=eos_id,
            device=args.device,
            max_new_tokens=args.max_new_tokens,
        )
    if args.backend in ("hf", "both"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(args.device)
        results["transformers"] = generate_hf(
            model,
            prompts,
            batch_size=args.batch_size,
            eos_id=eos_id,
            pad_id=pad_id,
            max_new_tokens=args.max_new_tokens,
        )
    accuracies = []
    for name, generation in results.items():
        correct = count_correct(tokenizer, problems, generation)
        accuracies.append(correct / len(problems))
        print(_report(name, correct, len(problems), generation, args.batch_size))
    if len(results) == 2:
        ours, theirs = results.values()
        same = sum(a == b for a, b in zip(ours.token_ids, theirs.token_ids, strict=True))
        print(f"identical replies (token ids): {same}/{len(problems)}")
    return 0 if min(accuracies) >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
