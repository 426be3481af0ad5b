"""The built-in model through our own engine on the CPU.

Its answers are exact and checkable, so a wrong attention mask, KV-cache slot, batch layout or
prefix-cache hit shows up as a wrong number, not only as a changed logit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmservice.runtime.builtin.chat_format import Message, render_prompt
from llmservice.runtime.builtin.corpus import Exchange, heldout_problems
from llmservice.runtime.builtin.evaluate import (
    MAX_NEW_TOKENS,
    Generation,
    count_correct,
    encode_prompts,
    generate_hf,
)

pytestmark = pytest.mark.slow

NUM_PROBLEMS = 40  # a CI-sized share of the 500 of evaluate.py


@pytest.fixture(scope="module")
def problems() -> list[Exchange]:
    return heldout_problems(NUM_PROBLEMS)


@pytest.fixture(scope="module")
def prompts(problems: list[Exchange], hf_tokenizer: Any) -> list[list[int]]:
    return encode_prompts(hf_tokenizer, [p.question for p in problems])


@pytest.fixture(scope="module")
def llm() -> Any:
    from llmservice import LLM

    return LLM("builtin:tiny-reasoner", device="cpu")


def _greedy(llm: Any, prompts: list[list[int]]) -> list[Any]:
    from llmservice import SamplingParams

    params = SamplingParams(max_tokens=MAX_NEW_TOKENS, temperature=0.0)
    return llm.generate([{"prompt_token_ids": ids} for ids in prompts], params)


def _reply_ids(output: Any, eos_id: int) -> list[int]:
    ids = list(output.outputs[0].token_ids)
    return ids[:-1] if ids and ids[-1] == eos_id else ids


@pytest.fixture(scope="module")
def outputs(llm: Any, prompts: list[list[int]]) -> list[Any]:
    """All the problems in one batch, greedy."""
    return _greedy(llm, prompts)


def test_batched_greedy_answers_are_at_least_95_percent_right(
    outputs: list[Any], problems: list[Exchange], hf_tokenizer: Any
) -> None:
    eos = hf_tokenizer.eos_token_id
    generation = Generation([_reply_ids(o, eos) for o in outputs], seconds=1.0, cpu_seconds=1.0)
    correct = count_correct(hf_tokenizer, problems, generation)
    assert correct >= 0.95 * NUM_PROBLEMS, f"{correct}/{NUM_PROBLEMS}"
    assert all(o.outputs[0].finish_reason == "stop" for o in outputs)
    # the text the engine detokenized is the reply, reasoning tags included
    assert outputs[0].outputs[0].text == hf_tokenizer.decode(
        generation.token_ids[0], skip_special_tokens=True
    )


def test_replies_are_the_same_tokens_as_transformers_generate(
    model_dir: Path, outputs: list[Any], prompts: list[list[int]], hf_tokenizer: Any
) -> None:
    from transformers import AutoModelForCausalLM

    eos, pad = hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id
    ours = [_reply_ids(o, eos) for o in outputs]
    longest = max(range(len(ours)), key=lambda i: len(ours[i]))
    chosen = sorted({0, 1, 2, longest})
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    # one prompt at a time: no padding, so the reference is transformers at its plainest
    theirs = generate_hf(model, [prompts[i] for i in chosen], batch_size=1, eos_id=eos, pad_id=pad)
    assert theirs.token_ids == [ours[i] for i in chosen]


def test_prefix_cache_hits_give_the_same_replies(
    llm: Any, outputs: list[Any], prompts: list[list[int]], hf_tokenizer: Any
) -> None:
    eos = hf_tokenizer.eos_token_id
    again = _greedy(llm, prompts[:12])
    assert [_reply_ids(o, eos) for o in again] == [_reply_ids(o, eos) for o in outputs[:12]]
    block_size = llm.engine_core.config.cache.block_size
    long_prompts = [o for o, p in zip(again, prompts[:12], strict=True) if len(p) > block_size]
    assert long_prompts, "no prompt is longer than a block"
    assert all(o.num_cached_tokens >= block_size for o in long_prompts)


def test_chunked_prefill_and_preemption_give_the_same_replies(
    outputs: list[Any], prompts: list[list[int]], hf_tokenizer: Any
) -> None:
    from llmservice import LLM

    eos = hf_tokenizer.eos_token_id
    # 40 blocks of 16 tokens hold about four replies at once: the others wait or are preempted;
    # 24 tokens a step split every prompt into chunks and mix prefills with decodes.
    tight = LLM(
        "builtin:tiny-reasoner",
        device="cpu",
        max_num_batched_tokens=24,
        num_kv_blocks=40,
        admission_headroom=False,
        enable_prefix_caching=False,
    )
    replies = _greedy(tight, prompts[:16])
    assert [_reply_ids(o, eos) for o in replies] == [_reply_ids(o, eos) for o in outputs[:16]]
    assert tight.engine_core.stats().scheduler.num_preemptions_total > 0


def test_the_deepseek_r1_parser_splits_working_from_answer(
    outputs: list[Any], problems: list[Exchange], hf_tokenizer: Any
) -> None:
    from llmservice.runtime.server.reasoning import REASONING_PARSERS

    eos = hf_tokenizer.eos_token_id
    checked = 0
    for output, problem in zip(outputs, problems, strict=True):
        ids = _reply_ids(output, eos)
        if (
            hf_tokenizer.decode(ids, skip_special_tokens=True).split("</think>")[-1]
            != problem.answer
        ):
            continue  # a wrong answer is the accuracy test's business
        parser = REASONING_PARSERS["deepseek_r1"].new_parser(
            render_prompt([Message("user", problem.question)])
        )
        text = ""
        for count in range(1, len(ids) + 1):  # token by token, as a stream
            longer = hf_tokenizer.decode(ids[:count], skip_special_tokens=True)
            parser.feed(longer[len(text) :])
            text = longer
        parser.finish()
        result = parser.result("stop")
        assert (result.reasoning, result.content) == (problem.reasoning, problem.answer)
        checked += 1
    assert checked >= 0.95 * NUM_PROBLEMS
