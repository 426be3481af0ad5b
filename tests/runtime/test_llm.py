"""LLM end to end on a checkpoint with a tokenizer: text, chat, stop strings, seeds, n > 1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmservice import LLM, SamplingParams

PROMPTS = ["the quick brown fox", "hello world", "numbers 0123", "a"]


@pytest.fixture(scope="module")
def llm(text_model: Path, make_llm: Callable[..., Any]) -> LLM:
    return make_llm(text_model, max_model_len=96)  # type: ignore[no-any-return]


def test_text_prompts_and_decoded_text(llm: LLM) -> None:
    tokenizer = llm.get_tokenizer()
    assert tokenizer is not None
    outputs = llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=12))
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        assert output.prompt == prompt
        assert output.prompt_token_ids == tokenizer.encode(prompt)
        completion = output.outputs[0]
        assert output.finished and completion.finish_reason in ("stop", "length")
        assert completion.text == tokenizer.decode(completion.token_ids)


def test_chat_renders_the_template(llm: LLM) -> None:
    tokenizer = llm.get_tokenizer()
    assert tokenizer is not None
    conversation = [{"role": "user", "content": "hello"}]
    (output,) = llm.chat(conversation, SamplingParams(temperature=0.0, max_tokens=4))
    assert output.prompt == "<s><|user|>hello\n<|assistant|>"
    assert output.prompt_token_ids[0] == 1  # "<s>" from the template, once
    assert output.prompt_token_ids == tokenizer.encode(output.prompt, add_special_tokens=False)
    two = llm.chat([conversation, conversation], SamplingParams(temperature=0.0, max_tokens=4))
    assert [o.outputs[0].token_ids for o in two] == [output.outputs[0].token_ids] * 2


def test_stop_string_cuts_the_text(llm: LLM) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    baseline = llm.generate(PROMPTS[0], greedy)[0].outputs[0]
    tokenizer = llm.get_tokenizer()
    assert tokenizer is not None
    # A stop string made of the end of token 2's text and the start of token 3's.
    pieces = [tokenizer.decode(baseline.token_ids[: i + 1]) for i in range(len(baseline.token_ids))]
    stop = pieces[3][len(pieces[1]) - 1 :][:3]
    assert len(stop) >= 2
    index = baseline.text.index(stop)
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, stop=[stop])
    completion = llm.generate(PROMPTS[0], params)[0].outputs[0]
    assert completion.text == baseline.text[:index]
    assert (completion.finish_reason, completion.stop_reason) == ("stop", stop)
    assert not llm.engine_core.has_unfinished_requests()  # the core request was aborted


def test_seeded_sampling_ignores_batch_composition(llm: LLM) -> None:
    seeded = SamplingParams(temperature=0.9, top_p=0.95, seed=1234, max_tokens=16, ignore_eos=True)
    alone = llm.generate(PROMPTS[0], seeded)[0].outputs[0].token_ids
    others = [
        SamplingParams(temperature=0.0, max_tokens=5),
        SamplingParams(temperature=1.2, top_k=20, max_tokens=30),
        SamplingParams(temperature=0.7, min_p=0.05, presence_penalty=0.5, seed=9, max_tokens=9),
    ]
    batch = llm.generate(
        [PROMPTS[1], PROMPTS[2], PROMPTS[0], PROMPTS[3]],
        [others[0], others[1], seeded, others[2]],
    )
    assert batch[2].outputs[0].token_ids == alone
    reordered = llm.generate([PROMPTS[0], PROMPTS[3]], [seeded, others[1]])
    assert reordered[0].outputs[0].token_ids == alone
    other_seed = SamplingParams(
        temperature=0.9, top_p=0.95, seed=4321, max_tokens=16, ignore_eos=True
    )
    assert llm.generate(PROMPTS[0], other_seed)[0].outputs[0].token_ids != alone


def test_mixed_parameters_in_one_batch(llm: LLM) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, greedy)]
    mixed = [
        greedy,
        SamplingParams(temperature=1.0, top_k=1, max_tokens=10, ignore_eos=True),  # = greedy
        SamplingParams(
            temperature=0.8, repetition_penalty=1.3, frequency_penalty=0.4, max_tokens=7
        ),
        SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True, logprobs=2),
    ]
    outputs = llm.generate(PROMPTS, mixed)
    assert outputs[0].outputs[0].token_ids == expected[0]
    assert outputs[1].outputs[0].token_ids == expected[1]
    assert 1 <= len(outputs[2].outputs[0].token_ids) <= 7
    assert outputs[3].outputs[0].token_ids == expected[3]
    logprobs = outputs[3].outputs[0].logprobs
    assert logprobs is not None and len(logprobs) == 10
    assert outputs[0].outputs[0].logprobs is None


def test_n_samples_share_the_prompt_blocks(llm: LLM) -> None:
    prompt = "the quick brown fox jumps over the lazy dog " * 3  # several full blocks
    hits_before = llm.engine_core.stats().scheduler.prefix_cache_hits
    params = SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=8, ignore_eos=True)
    (output,) = llm.generate(prompt, params)
    assert [o.index for o in output.outputs] == [0, 1, 2]
    assert len({tuple(o.token_ids) for o in output.outputs}) > 1  # seeds 5, 6, 7 differ
    full_blocks = (len(output.prompt_token_ids) - 1) // 16 * 16
    hits = llm.engine_core.stats().scheduler.prefix_cache_hits - hits_before
    assert hits >= 2 * full_blocks  # samples 1 and 2 reuse sample 0's prompt blocks


def test_errors_leave_the_engine_serving(llm: LLM) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=4)
    expected = llm.generate(PROMPTS[1], greedy)[0].outputs[0].token_ids
    too_long = "hello " * 200
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate([PROMPTS[1], too_long], greedy)
    assert not llm.engine_core.has_unfinished_requests()  # the good one was withdrawn too
    with pytest.raises(ValueError, match="temperature"):
        llm.generate(PROMPTS[1], SamplingParams(temperature=-1.0))
    with pytest.raises(ValueError, match="prompt_token_ids"):
        llm.generate({"text": "x"}, greedy)
    with pytest.raises(ValueError, match="2 sampling_params for 1 prompts"):
        llm.generate(PROMPTS[1], [greedy, greedy])
    # A stop token past the vocabulary used to fail inside a step (the min_tokens mask).
    vocab = llm.engine_core.model_config.vocab_size
    with pytest.raises(ValueError, match="stop_token_ids"):
        llm.generate(PROMPTS[1], SamplingParams(stop_token_ids=[vocab], min_tokens=2))
    with pytest.raises(ValueError, match="logit_bias"):
        llm.generate(PROMPTS[1], SamplingParams(logit_bias={vocab: 1.0}))
    assert not llm.engine_core.has_unfinished_requests()
    assert llm.generate(PROMPTS[1], greedy)[0].outputs[0].token_ids == expected
