"""Greedy parity with transformers, for every architecture and every scheduling path.

transformers' own `generate` runs each prompt alone; `LLM.generate` runs them as one batch of
different lengths, with prefix caching on (twice, so the second pass hits the cache) and off,
with chunked prefill forced by a 7-token budget, and with preemption forced by a tiny KV pool.
Tokens must be identical and logprobs (sampled and top-3) within 1e-4.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from llmservice import SamplingParams

ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")  # the checkpoints of conftest.py

MAX_NEW_TOKENS = 12
NUM_TOP_LOGPROBS = 3
_gen = torch.Generator().manual_seed(1234)
_SHARED = torch.randint(3, 300, (40,), generator=_gen).tolist()
PROMPTS = [
    [17],
    torch.randint(3, 300, (7,), generator=_gen).tolist(),
    torch.randint(3, 300, (20,), generator=_gen).tolist(),
    [*_SHARED, 5, 6, 7],  # two prompts sharing 40 tokens (2 full blocks)
    [*_SHARED, 9, 8],
    torch.randint(3, 300, (45,), generator=_gen).tolist(),
]
MODES: dict[str, dict[str, Any]] = {
    "prefix_caching": {"enable_prefix_caching": True},
    "no_prefix_caching": {"enable_prefix_caching": False},
    "chunked_prefill": {"max_num_batched_tokens": 7},
    # 5 usable blocks of 16 tokens hold one 64-token sequence, far less than the batch needs.
    "preemption": {"num_kv_blocks": 6, "max_model_len": 64, "admission_headroom": False},
}


def _hf_reference(model: Any, prompt: list[int]) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens of `prompt` alone, and the log-softmax of the raw logits at each step."""
    out = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    tokens = out.sequences[0, len(prompt) :].tolist()
    return tokens, [torch.log_softmax(step[0].float(), dim=-1) for step in out.logits]


@pytest.fixture(scope="module")
def references(checkpoints: dict[str, tuple[Path, Any]]) -> dict[str, list[Any]]:
    return {
        arch: [_hf_reference(model, prompt) for prompt in PROMPTS]
        for arch, (_, model) in checkpoints.items()
    }


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_matches_transformers(
    arch: str,
    mode: str,
    make_llm: Callable[..., Any],
    references: dict[str, list[Any]],
) -> None:
    llm = make_llm(arch, **MODES[mode])
    params = SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS, logprobs=NUM_TOP_LOGPROBS)
    prompts = [{"prompt_token_ids": p} for p in PROMPTS]
    passes = 2 if mode == "prefix_caching" else 1
    for _ in range(passes):
        outputs = llm.generate(prompts, params)
        for prompt, output, (hf_tokens, hf_logprobs) in zip(
            PROMPTS, outputs, references[arch], strict=True
        ):
            completion = output.outputs[0]
            assert output.prompt_token_ids == prompt
            assert completion.token_ids == hf_tokens
            _assert_logprobs_match(completion.token_ids, completion.logprobs, hf_logprobs)
    stats = llm.engine_core.stats().scheduler
    if mode == "prefix_caching":
        assert stats.prefix_cache_hits > 0
    if mode == "no_prefix_caching":
        assert stats.prefix_cache_hits == 0
    if mode == "preemption":
        assert stats.num_preemptions_total > 0
    llm.engine_core.scheduler.kv_cache.check_integrity()
    assert stats.kv_cache_usage == 0.0


def _assert_logprobs_match(
    tokens: list[int], logprobs: list[dict[int, Any]], hf_logprobs: list[torch.Tensor]
) -> None:
    assert len(logprobs) == len(tokens)
    for token, entry, expected in zip(tokens, logprobs, hf_logprobs, strict=True):
        top_values, top_ids = expected.topk(NUM_TOP_LOGPROBS)
        wanted = {
            token: float(expected[token]),
            **dict(zip(top_ids.tolist(), top_values.tolist(), strict=True)),
        }
        assert set(entry) == set(wanted)
        for token_id, value in wanted.items():
            assert entry[token_id].logprob == pytest.approx(value, abs=1e-4)
        assert entry[token].rank == 1  # greedy: the sampled token is the most likely
