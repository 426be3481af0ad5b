"""Cascade attention inside the engine: greedy tokens with cascade decode steps equal those
without, on requests that share a cached prompt prefix (plus two that do not).

The policy is forced on for the tiny model (its prompts are far below the real floors) by
replacing `model_inputs.CASCADE_POLICY`, and forbidden for the expected tokens. The kernel
set's cascade_attention is wrapped to count calls, so a test cannot pass without cascades.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from llmservice import LLM, SamplingParams
from llmservice.kernels import ops, reference
from llmservice.runtime import model_inputs
from llmservice.runtime.model_inputs import CascadePolicy

FORCED = CascadePolicy(min_seqs=2, min_prefix_tokens=16, min_saved_tokens=0)
NEVER = CascadePolicy(min_seqs=1 << 30)

_gen = torch.Generator().manual_seed(7)
PREFIX = torch.randint(3, 300, (48,), generator=_gen).tolist()  # three 16-token blocks
PROMPTS = [
    *[[*PREFIX, *torch.randint(3, 300, (n,), generator=_gen).tolist()] for n in range(1, 9)],
    torch.randint(3, 300, (30,), generator=_gen).tolist(),  # no shared prefix
    torch.randint(3, 300, (70,), generator=_gen).tolist(),
]
MAX_TOKENS = [24 - 2 * i for i in range(len(PROMPTS))]  # the batch shrinks as requests finish


def _generate(llm: LLM) -> list[list[int]]:
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in MAX_TOKENS]
    prompts: list[Any] = [{"prompt_token_ids": p} for p in PROMPTS]
    return [list(out.outputs[0].token_ids) for out in llm.generate(prompts, params)]


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[int]:
    """Wraps module.cascade_attention (before the engine picks its kernels) to count calls."""
    calls = [0]
    original = module.cascade_attention

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls[0] += 1
        return original(*args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(module, "cascade_attention", counted)
    return calls


def _cascade_steps(llm: LLM, calls: list[int]) -> int:
    """Cascade work so far: eager calls of the kernel (one per layer) plus cascade graph
    replays (one per step)."""
    graphs = llm.engine_core.model_runner.graphs
    return calls[0] + (graphs.num_cascade_replays if graphs is not None else 0)


def _compare(llm: LLM, calls: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    # A first request computes the prefix, so the batch's requests hit the prefix cache and
    # share its blocks (requests admitted together would each compute their own copy).
    llm.generate([{"prompt_token_ids": [*PREFIX, 5]}], SamplingParams(max_tokens=1))
    monkeypatch.setattr(model_inputs, "CASCADE_POLICY", NEVER)
    # Counted from here: the CUDA start-up warm-up runs a cascade step of its own.
    before = _cascade_steps(llm, calls)
    expected = _generate(llm)
    assert _cascade_steps(llm, calls) == before
    monkeypatch.setattr(model_inputs, "CASCADE_POLICY", FORCED)
    assert _generate(llm) == expected
    assert _cascade_steps(llm, calls) > before
    assert llm.engine_core.stats().scheduler.prefix_cache_hits >= 8 * len(PREFIX)


def test_cascade_steps_give_the_same_tokens_on_the_cpu(
    make_llm: Callable[..., LLM], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(monkeypatch, reference)
    _compare(make_llm("llama", max_num_seqs=16), calls, monkeypatch)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cascade_steps_give_the_same_tokens_on_the_gpu(
    checkpoints: dict[str, tuple[Path, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(monkeypatch, ops)
    # float32: the Triton dots run in IEEE float32, so only summation order differs and greedy
    # tokens must match (as in test_gpu_path.py).
    llm = LLM(
        str(checkpoints["llama"][0]),
        device="cuda",
        dtype="float32",
        max_num_seqs=16,
        max_model_len=256,
    )
    runner = llm.engine_core.model_runner
    assert runner.ops.name == "triton" and runner.graphs is not None
    _compare(llm, calls, monkeypatch)
    assert runner.graphs.num_replays > 0  # the plain pass replayed graphs
    # Cascade steps replayed the cascade graphs (8 and 16 rows; smaller batches are padded).
    assert runner.graphs.cascade_sizes == [8, 16]
    assert runner.graphs.num_cascade_replays > 0
    llm.engine_core.scheduler.kv_cache.check_integrity()
    del llm
    gc.collect()
