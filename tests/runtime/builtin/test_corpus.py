"""The corpus: seeded, its answers right, its chat text the chat template's, and short enough."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from llmservice.runtime.builtin.chat_format import (
    CHAT_TEMPLATE,
    Message,
    assistant_target,
    render_prompt,
    split_answer,
)
from llmservice.runtime.builtin.corpus import (
    heldout_problems,
    sample_conversation,
    sample_problem,
    training_rng,
)
from llmservice.runtime.builtin.tokenizer_train import MAX_MODEL_LEN


def test_the_same_seed_draws_the_same_corpus() -> None:
    rng_a, rng_b = training_rng(0, 3), training_rng(0, 3)
    assert [sample_conversation(rng_a) for _ in range(50)] == [
        sample_conversation(rng_b) for _ in range(50)
    ]
    assert sample_conversation(training_rng(0, 3)) != sample_conversation(training_rng(1, 3))
    assert heldout_problems(20) == heldout_problems(20)


def test_the_heldout_stream_is_not_a_training_stream() -> None:
    heldout = [p.question for p in heldout_problems(30)]
    for shard in range(3):
        rng = training_rng(0, shard)
        assert [sample_problem(rng).question for _ in range(30)] != heldout


def test_every_answer_is_the_value_of_the_expression_it_works_on() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        problem = sample_problem(rng)
        expression = problem.reasoning.splitlines()[0]  # the question, as an expression
        assert str(eval(expression)) == problem.answer, problem
        assert problem.reasoning.endswith(f"= {problem.answer}")


def test_the_mix_has_expressions_chains_word_problems_and_negative_answers() -> None:
    problems = heldout_problems(500)
    expressions = [p.reasoning.splitlines()[0] for p in problems]
    assert sum(e.count("*") >= 1 for e in expressions) > 100
    assert sum(sum(e.count(op) for op in "+-*") >= 2 for e in expressions) > 50
    assert sum(" " in p.question and "How many" in p.question for p in problems) > 30
    assert sum(p.answer.startswith("-") for p in problems) > 10
    # the issue's own examples are in the trained distribution (numbers aside)
    rng = training_rng(0, 0)
    shapes = {re.sub(r"\d+", "N", sample_problem(rng).question) for _ in range(20_000)}
    for question in ("What is 47 * 23?", "What is 305 - 78?", "What is 12 + 7 - 3?", "47*23"):
        assert re.sub(r"\d+", "N", question) in shapes


def test_the_python_rendering_is_the_chat_template(hf_tokenizer: Any) -> None:
    conversations = [
        [Message("user", "What is 47 * 23?")],
        [
            Message("system", "You are a helpful assistant."),
            Message("user", "hi"),
            Message("assistant", assistant_target("The user greets me.", "Hello!")),
            Message("user", "12+7-3"),
        ],
    ]
    for messages in conversations:
        as_dicts = [{"role": m.role, "content": m.content} for m in messages]
        rendered = hf_tokenizer.apply_chat_template(
            as_dicts, add_generation_prompt=True, tokenize=False
        )
        assert rendered == render_prompt(messages)
    assert hf_tokenizer.chat_template == CHAT_TEMPLATE
    # earlier replies lose their reasoning, as DeepSeek-R1's template does
    assert "greets" not in render_prompt(conversations[1])


def test_content_parts_render_as_their_text(hf_tokenizer: Any) -> None:
    parts = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}],
        }
    ]
    rendered = hf_tokenizer.apply_chat_template(parts, add_generation_prompt=True, tokenize=False)
    assert rendered == render_prompt([Message("user", "What is 2+2?")])


def test_an_unknown_role_is_refused_clearly(hf_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="roles system, user and assistant"):
        render_prompt([Message("tool", "42")])
    with pytest.raises(Exception, match="roles system, user and assistant"):
        hf_tokenizer.apply_chat_template([{"role": "tool", "content": "42"}], tokenize=False)


def test_every_sample_fits_the_context(hf_tokenizer: Any) -> None:
    rng = training_rng(5, 0)
    for _ in range(1500):
        sample = sample_conversation(rng)
        ids = hf_tokenizer.encode(sample.prompt + sample.target, add_special_tokens=False)
        assert len(ids) <= MAX_MODEL_LEN


def test_split_answer_takes_the_text_after_the_reasoning() -> None:
    assert split_answer("<think>47*23\n= 1081</think>1081<|end|>") == "1081"
    assert split_answer("no reasoning at all") == "no reasoning at all"
