"""The CUDA fast path (Triton kernels, decode CUDA graphs, greedy argmax) against the reference.

The oracle is the same engine with `kernel_ops="reference"` and no graphs, on the same GPU and
in float32, so every difference comes from the fast path. Float32 keeps logits ties out of the
comparison: the Triton dots run in IEEE float32 for float32 inputs and the GEMMs are the same
cuBLAS calls on both sides, so greedy tokens must match exactly. The runs cover chunked prefill
(an 8-token budget), prefix-cache hits (a second pass over prompts sharing two full blocks),
decode batches that shrink through the graph ladder as requests finish, and preemption.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import torch

from llmservice import LLM, SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

_gen = torch.Generator().manual_seed(99)
_SHARED = torch.randint(3, 300, (37,), generator=_gen).tolist()
PROMPTS = [
    [5],
    torch.randint(3, 300, (9,), generator=_gen).tolist(),
    [*_SHARED, 11],
    [*_SHARED, 12, 13, 14],
    torch.randint(3, 300, (70,), generator=_gen).tolist(),
    *[torch.randint(3, 300, (n,), generator=_gen).tolist() for n in (3, 17, 33, 2, 48, 21)],
]
# Different lengths, so the decode batch shrinks step by step (ladder sizes 11 -> 1).
MAX_TOKENS = [40 - 3 * i for i in range(len(PROMPTS))]
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "chunked_prefill": {"max_num_batched_tokens": 8},
    "no_prefix_caching": {"enable_prefix_caching": False},
    "preemption": {"num_kv_blocks": 12, "max_model_len": 128, "admission_headroom": False},
}


def _generate(llm: LLM, passes: int) -> list[list[int]]:
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in MAX_TOKENS]
    prompts: list[Any] = [{"prompt_token_ids": p} for p in PROMPTS]
    tokens: list[list[int]] = []
    for _ in range(passes):
        tokens += [list(out.outputs[0].token_ids) for out in llm.generate(prompts, params)]
    return tokens


@pytest.mark.parametrize("mode", MODES)
def test_fast_path_greedy_matches_reference(
    mode: str, checkpoints: dict[str, tuple[Path, Any]]
) -> None:
    path = str(checkpoints["llama"][0])
    common: dict[str, Any] = {"device": "cuda", "dtype": "float32", "max_num_seqs": 16}
    common.update(MODES[mode])
    common.setdefault("max_model_len", 256)
    reference = LLM(path, kernel_ops="reference", enforce_eager=True, **common)
    expected = _generate(reference, passes=2)
    del reference
    gc.collect()
    fast = LLM(path, **common)
    runner = fast.engine_core.model_runner
    assert runner.ops.name == "triton"
    assert runner.graphs is not None
    assert runner.graphs.sizes == [1, 2, 4, 8, 16]
    assert _generate(fast, passes=2) == expected
    # Pure-decode steps replayed graphs (with an 8-token budget most steps are mixed, eager).
    assert runner.graphs.num_replays > 0
    stats = fast.engine_core.stats().scheduler
    if mode == "default":
        assert stats.prefix_cache_hits > 0
        # Two passes of at least 40 steps, nearly all pure decode.
        assert runner.graphs.num_replays > max(MAX_TOKENS)
    if mode == "preemption":
        assert stats.num_preemptions_total > 0
    fast.engine_core.scheduler.kv_cache.check_integrity()


def test_cuda_defaults_and_kv_capacity(checkpoints: dict[str, tuple[Path, Any]]) -> None:
    llm = LLM(str(checkpoints["llama"][0]), device="cuda", max_model_len=256)
    runner = llm.engine_core.model_runner
    config = llm.engine_core.config
    # float32 checkpoints are served in bfloat16 on GPUs; vLLM's H100 batch defaults.
    assert config.model.dtype == torch.bfloat16
    assert config.scheduler.max_num_seqs == 1024
    assert config.scheduler.max_num_batched_tokens == 16384
    assert runner.kv_capacity_tokens == (runner.num_blocks - 1) * config.cache.block_size
    # A tiny model leaves nearly all of 90% of the GPU to the cache: at least half of it.
    _, total = torch.cuda.mem_get_info()
    cache_bytes = sum(c.numel() * c.element_size() for c in runner.kv_caches)
    assert cache_bytes > 0.45 * total
    assert runner.graphs is not None and runner.graphs.max_batch_size == 1024
    # bfloat16 greedy runs to the end (its tokens may differ from float32 where logits tie).
    tokens = _generate(llm, passes=1)
    assert [len(t) for t in tokens] == MAX_TOKENS
    del llm
    gc.collect()


def test_enforce_eager_captures_no_graph(checkpoints: dict[str, tuple[Path, Any]]) -> None:
    llm = LLM(str(checkpoints["llama"][0]), device="cuda", max_model_len=256, enforce_eager=True)
    assert llm.engine_core.model_runner.graphs is None
    assert [len(t) for t in _generate(llm, passes=1)] == MAX_TOKENS


@pytest.mark.parametrize("mode", ["default", "preemption"])
def test_async_seeded_sampling_matches_sync(
    mode: str, checkpoints: dict[str, tuple[Path, Any]]
) -> None:
    """Sampled requests (temperature, top-k/top-p/min-p, seeds, logprobs, penalties, min_tokens)
    are launched ahead of their tokens on CUDA too, with the tokens of the synchronous loop."""
    common: dict[str, Any] = {"device": "cuda", "dtype": "float32", "max_num_seqs": 16}
    common.update(MODES[mode])
    common.setdefault("max_model_len", 256)
    llm = LLM(str(checkpoints["llama"][0]), **common)
    core = llm.engine_core
    prompts: list[Any] = [{"prompt_token_ids": p} for p in PROMPTS]
    params = [
        SamplingParams(temperature=0.8, top_p=0.95, top_k=(0, 50)[i % 2], min_p=0.02,
                       seed=7 + i, logprobs=(None, 2)[i % 2], max_tokens=n, ignore_eos=True,
                       presence_penalty=(0.0, 1.5)[i % 3 == 0], min_tokens=(0, 3)[i % 2],
                       stop_token_ids=[*range(3, 300, 11)])
        for i, n in enumerate(MAX_TOKENS)
    ]  # fmt: skip

    def tokens(llm: LLM) -> list[list[int]]:
        return [list(out.outputs[0].token_ids) for out in llm.generate(prompts, params)]

    core.async_scheduling = False
    expected = tokens(llm)
    core.async_scheduling = True
    launch, launches = core.model_runner.launch, [0]

    def counted(*args: Any) -> Any:
        launches[0] += 1
        return launch(*args)

    core.model_runner.launch = counted  # type: ignore[method-assign]
    assert tokens(llm) == expected
    assert launches[0] > 4
    core.scheduler.kv_cache.check_integrity()
    del llm
    gc.collect()


@pytest.mark.parametrize("mode", MODES)
def test_async_greedy_matches_sync(mode: str, checkpoints: dict[str, tuple[Path, Any]]) -> None:
    common: dict[str, Any] = {"device": "cuda", "dtype": "float32", "max_num_seqs": 16}
    common.update(MODES[mode])
    common.setdefault("max_model_len", 256)
    llm = LLM(str(checkpoints["llama"][0]), **common)
    core = llm.engine_core
    assert core.async_scheduling  # the default on CUDA
    core.async_scheduling = False
    expected = _generate(llm, passes=2)
    core.async_scheduling = True
    assert _generate(llm, passes=2) == expected
    core.scheduler.kv_cache.check_integrity()
    del llm
    gc.collect()


def test_prompt_logprobs_on_cuda_match_the_reference_path(
    checkpoints: dict[str, tuple[Path, Any]],
) -> None:
    """Prompt logprobs read the eager step's hidden states (chunked prefill, graphs on)."""
    path = str(checkpoints["llama"][0])
    common: dict[str, Any] = {"device": "cuda", "dtype": "float32", "max_num_batched_tokens": 16}
    params = SamplingParams(temperature=0.0, max_tokens=4, prompt_logprobs=2)
    prompt: Any = {"prompt_token_ids": PROMPTS[4]}

    def prompt_logprobs(llm: LLM) -> list[float]:
        (output,) = llm.generate(prompt, params)
        assert output.prompt_logprobs is not None and output.prompt_logprobs[0] is None
        return [
            entry[token].logprob
            for token, entry in zip(PROMPTS[4][1:], output.prompt_logprobs[1:], strict=True)
            if entry is not None
        ]

    reference = LLM(path, kernel_ops="reference", enforce_eager=True, **common)
    expected = prompt_logprobs(reference)
    del reference
    gc.collect()
    fast = LLM(path, **common)
    got = prompt_logprobs(fast)
    assert len(got) == len(expected) == len(PROMPTS[4]) - 1
    assert got == pytest.approx(expected, abs=1e-3)
    del fast
    gc.collect()


def test_long_prefill_adds_the_residual_in_the_gemm_and_matches_reference(
    monkeypatch: pytest.MonkeyPatch, checkpoints: dict[str, tuple[Path, Any]]
) -> None:
    """A step of ops.RESIDUAL_ADD_MIN_ROWS+ tokens adds o_proj's and down_proj's output to the
    residual inside cuBLAS's GEMM (ops.linear_add_) and norms the residual alone after it."""
    from llmservice.kernels import ops

    path = str(checkpoints["llama"][0])
    common: dict[str, Any] = {"device": "cuda", "dtype": "float32", "max_model_len": 256}
    gen = torch.Generator().manual_seed(5)
    # Nine 150-token prompts: the first step prefills 1,350 tokens at once.
    prompts: Any = [
        {"prompt_token_ids": torch.randint(3, 300, (150,), generator=gen).tolist()}
        for _ in range(9)
    ]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)

    def tokens(llm: LLM) -> list[list[int]]:
        return [list(out.outputs[0].token_ids) for out in llm.generate(prompts, params)]

    reference = LLM(path, kernel_ops="reference", enforce_eager=True, **common)
    expected = tokens(reference)
    del reference
    gc.collect()
    fused_rows: list[int] = []
    linear_add_ = ops.linear_add_

    def recording(x: Any, weight: Any, bias: Any, residual: Any) -> torch.Tensor:
        if ops.fuses_residual_add(x, weight, bias):
            fused_rows.append(x.shape[0])
        return linear_add_(x, weight, bias, residual)

    monkeypatch.setattr(ops, "linear_add_", recording)  # read when the kernel set is built
    fast = LLM(path, **common)
    assert tokens(fast) == expected
    assert fused_rows and min(fused_rows) >= ops.RESIDUAL_ADD_MIN_ROWS
    del fast
    gc.collect()
