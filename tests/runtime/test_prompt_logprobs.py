"""Prompt logprobs (vLLM's `SamplingParams.prompt_logprobs`) against transformers' logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from llmservice import LLM, SamplingParams

PROMPT = [int(7 + (i * 37) % 280) for i in range(45)]  # three 16-token blocks, chunked below


def _expected(hf_model: Any, prompt: list[int]) -> torch.Tensor:
    """(len(prompt) - 1, vocab): log-softmax at each position, predicting the next token."""
    with torch.no_grad():
        logits = hf_model(torch.tensor([prompt])).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1)


@pytest.mark.parametrize(
    "engine",
    [{}, {"max_num_batched_tokens": 8}, {"num_kv_blocks": 7, "admission_headroom": False}],
    ids=["whole_prompt", "chunked_prefill", "preemption"],
)
@pytest.mark.parametrize("overlapped", [False, True], ids=["sync", "overlapped"])
def test_prompt_logprobs_match_transformers(
    checkpoints: dict[str, tuple[Path, Any]], engine: dict[str, Any], overlapped: bool
) -> None:
    path, hf_model = checkpoints["llama"]
    llm = LLM(str(path), device="cpu", dtype="float32", max_model_len=96, **engine)
    llm.engine_core.async_scheduling = overlapped  # the CUDA default, driven on the CPU
    expected = _expected(hf_model, PROMPT)
    # The prompt is cached by a first request: the second must compute it anyway.
    llm.generate({"prompt_token_ids": PROMPT}, SamplingParams(max_tokens=2))
    params = [
        SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True, prompt_logprobs=3),
        SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True),
        SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True, prompt_logprobs=0),
    ]
    outputs = llm.generate([{"prompt_token_ids": PROMPT}] * 3, params)
    with_top, without, bare = (o.prompt_logprobs for o in outputs)
    assert without is None
    assert with_top is not None and bare is not None
    assert len(with_top) == len(PROMPT) and with_top[0] is None and bare[0] is None
    for position, (entry, bare_entry) in enumerate(zip(with_top[1:], bare[1:], strict=True)):
        assert entry is not None and bare_entry is not None
        token = PROMPT[position + 1]
        want = expected[position]
        assert entry[token].logprob == pytest.approx(want[token].item(), abs=1e-4)
        assert entry[token].rank == int((want > want[token]).sum()) + 1
        top = want.topk(3).indices.tolist()
        assert set(entry) == {token, *top} and set(bare_entry) == {token}
    assert [o.outputs[0].token_ids for o in outputs[1:]] == [outputs[0].outputs[0].token_ids] * 2
    if "num_kv_blocks" in engine:
        assert llm.engine_core.stats().scheduler.num_preemptions_total > 0
    assert not llm.engine_core.has_unfinished_requests()


def test_prompt_logprobs_are_bounded_like_logprobs() -> None:
    with pytest.raises(ValueError, match="prompt_logprobs"):
        SamplingParams(prompt_logprobs=21)
    with pytest.raises(ValueError, match="prompt_logprobs"):
        SamplingParams(prompt_logprobs=-1)


def test_n_samples_share_one_computation_of_the_prompt_logprobs(
    checkpoints: dict[str, tuple[Path, Any]],
) -> None:
    path, hf_model = checkpoints["llama"]
    llm = LLM(str(path), device="cpu", dtype="float32", max_model_len=96)
    params = SamplingParams(n=3, seed=1, max_tokens=5, ignore_eos=True, prompt_logprobs=1)
    (output,) = llm.generate({"prompt_token_ids": PROMPT}, params)
    assert len(output.outputs) == 3 and output.prompt_logprobs is not None
    expected = _expected(hf_model, PROMPT)
    got = [
        entry[t].logprob
        for t, entry in zip(PROMPT[1:], output.prompt_logprobs[1:], strict=True)
        if entry
    ]
    assert got == pytest.approx([expected[p, t].item() for p, t in enumerate(PROMPT[1:])], abs=1e-4)
    # Samples 2 and 3 started from the first one's cached prompt blocks.
    assert llm.engine_core.stats().scheduler.prefix_cache_hits > 0
