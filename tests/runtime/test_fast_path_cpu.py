"""CPU-side pieces of the CUDA fast path: the graph ladder, decode inputs, the greedy shortcut."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from llmservice import LLM, SamplingParams
from llmservice.runtime.cuda_graphs import capture_sizes
from llmservice.runtime.model_inputs import prepare_host_inputs
from llmservice.runtime.model_runner import _all_plain_greedy
from llmservice.runtime.sampling_metadata import SamplingRow
from llmservice.scheduler import Request, RequestLimits, ScheduledChunk


def test_capture_sizes_ladder() -> None:
    sizes = capture_sizes(512)
    assert sizes[:6] == [1, 2, 4, 8, 16, 24]
    assert sizes[-1] == 512 and sizes == sorted(set(sizes))
    # Padding to the next size adds at most max(8, a quarter of the batch) rows.
    assert all(b - a <= max(8, a // 4) for a, b in itertools.pairwise(sizes))
    assert capture_sizes(16) == [1, 2, 4, 8, 16]
    assert capture_sizes(10) == [1, 2, 4, 8, 10]
    with pytest.raises(ValueError, match="max_batch_size"):
        capture_sizes(0)


def _request(rid: str, prompt: list[int], outputs: list[int], min_tokens: int = 0) -> Request:
    limits = RequestLimits(max_tokens=8, min_tokens=min_tokens, stop_token_ids=frozenset({2}))
    request = Request(rid, prompt, limits, arrival_time=0.0)
    for token in outputs:
        request.append_output_token(token)
    return request


def test_pure_decode_inputs() -> None:
    a = _request("a", [5, 6, 7], [8])
    b = _request("b", list(range(10, 30)), [40, 41])
    chunks = [
        ScheduledChunk("a", 3, 1, (3,), True),
        ScheduledChunk("b", 21, 1, (4, 9), True),
    ]
    host = prepare_host_inputs(chunks, [a, b], block_size=16)
    assert host.is_pure_decode
    assert host.input_ids.tolist() == [8, 41]
    assert host.positions.tolist() == [3, 21]
    assert host.slot_mapping.tolist() == [3 * 16 + 3, 9 * 16 + 5]
    assert host.block_tables.tolist() == [[3, 0], [4, 9]]
    assert host.seq_lens.tolist() == [4, 22]
    mixed = prepare_host_inputs(
        [ScheduledChunk("a", 0, 3, (3,), True), chunks[1]], [a, b], block_size=16
    )
    assert not mixed.is_pure_decode
    # Decodes first (the attention of a mixed batch runs them through the decode kernel).
    assert mixed.num_decodes == 1
    assert mixed.input_ids.tolist() == [41, 5, 6, 7]
    assert mixed.positions.tolist() == [21, 0, 1, 2]
    assert mixed.query_start_loc.tolist() == [0, 1, 4]
    assert mixed.block_tables.tolist() == [[4, 9], [3, 0]]
    assert mixed.sampled_request_ids == ("b", "a")
    assert mixed.logits_indices.tolist() == [0, 3]
    assert host.num_decodes == 2


def test_plain_greedy_shortcut_only_when_argmax_suffices() -> None:
    request = _request("a", [5], [])
    greedy = SamplingParams(temperature=0.0)
    assert _all_plain_greedy([SamplingRow(greedy, request, None)])
    for params in (
        SamplingParams(temperature=0.7),
        SamplingParams(temperature=0.0, logprobs=1),
        SamplingParams(temperature=0.0, repetition_penalty=1.2),
        SamplingParams(temperature=0.0, presence_penalty=0.5),
    ):
        assert not _all_plain_greedy([SamplingRow(params, request, None)])
    # Stop tokens are masked until min_tokens: argmax alone could pick one.
    early = _request("b", [5], [], min_tokens=2)
    assert not _all_plain_greedy([SamplingRow(greedy, early, None)])


def test_logits_padded_to_buckets_are_the_unpadded_ones(
    checkpoints: dict[str, tuple[Path, Any]],
) -> None:
    """On CUDA the lm_head runs at bucketed row counts (loaded at start-up); the padding rows
    must not change a sampled token or logprob. Forced here on the CPU."""
    llm = LLM(str(checkpoints["llama"][0]), device="cpu", max_model_len=128, max_num_seqs=8)
    prompts: list[Any] = [{"prompt_token_ids": [5 + i, 9, 4 + 2 * i]} for i in range(5)]
    params = [
        SamplingParams(temperature=(0.0, 0.9)[i % 2], seed=i, max_tokens=6 + i, logprobs=2,
                       ignore_eos=True)
        for i in range(5)
    ]  # fmt: skip

    def run() -> list[tuple[list[int], list[float]]]:
        outputs = llm.generate(prompts, params)
        return [
            (
                list(o.outputs[0].token_ids),
                [next(iter(d.values())).logprob for d in o.outputs[0].logprobs or []],
            )
            for o in outputs
        ]

    runner = llm.engine_core.model_runner
    assert runner.logits_buckets == []  # the CPU needs no padding
    expected = run()
    runner.logits_buckets = [3, 8]  # 1-2 rows -> 3, 4-5 rows -> 8 (the batch shrinks 5 -> 1)
    padded = run()
    assert [tokens for tokens, _ in padded] == [tokens for tokens, _ in expected]
    for (_, ours), (_, theirs) in zip(padded, expected, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-5)
