"""`LLM` under hostile use: random SamplingParams (legal or not) on a tight KV cache, and a call
interrupted midway. Bad parameters fail at creation or when added, with ValueError; whatever
happens, no request of a failed call stays in the engine and the next call answers as before."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from llmservice import LLM, SamplingParams

PROMPTS = ["the quick brown fox", "hello world", "numbers 0123 " * 4]
GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)

# Legal values at the edges of each field: the sampler must survive them.
_VALID: dict[str, list[Any]] = {
    "n": [1, 2, 3],
    "temperature": [0.0, -0.0, 1e-5, 1.0000001e-5, 0.3, 7.0, 1e30, 3.5e38, 1e308],
    "top_p": [5e-324, 0.3, 1.0],
    "top_k": [-1, 0, 1, 5, 2**63 - 1],
    "min_p": [0.0, 5e-324, 0.5, 1.0],
    "seed": [None, 0, -1, 2**63 - 1, -(2**63)],
    "max_tokens": [1, 4, 8, None],
    "min_tokens": [0, 1],
    "stop": [None, "o", ["a", " "], "\U0001f600"],
    "stop_token_ids": [None, [0], [2], [299], list(range(40))],
    "ignore_eos": [True, False],
    "presence_penalty": [-2.0, 0.5, 2.0],
    "frequency_penalty": [-2.0, 0.5, 2.0],
    "repetition_penalty": [1e-45, 5e-324, 0.5, 2.0, 1e30, 1e308],
    "logprobs": [None, 0, 5, 20],
}
# Values past the edges (inf, NaN, int64 limits, wrong types): one may replace a legal one.
_HOSTILE = [
    *((name, value) for name in ("temperature", "top_p", "min_p", "repetition_penalty",
                                 "presence_penalty") for value in (float("inf"), float("nan"),
                                                                   -1.0, "1", None)),
    *((name, value) for name in ("n", "top_k", "seed", "max_tokens", "min_tokens", "logprobs")
      for value in (2**63, -(2**63) - 1, -2, 3.0, True)),
    ("stop", ""), ("stop", [1]), ("stop_token_ids", [-1]), ("stop_token_ids", [300]),
    ("stop_token_ids", "12"), ("ignore_eos", 1), ("logprobs", 21), ("min_tokens", 9),
]  # fmt: skip
_PARAMS = st.tuples(
    st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in _VALID.items()}),
    st.none() | st.sampled_from(_HOSTILE),
)


@pytest.fixture(scope="module")
def llm(text_model: Path, make_llm: Callable[..., Any]) -> LLM:
    # 6 usable blocks of 16 tokens for up to 4 sequences of up to 96 tokens: preemption;
    # 24-token steps: chunked prefill.
    return make_llm(  # type: ignore[no-any-return]
        text_model, max_model_len=96, num_kv_blocks=7, max_num_batched_tokens=24,
        max_num_seqs=4, admission_headroom=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def expected(llm: LLM) -> list[int]:
    """The greedy answer of a fresh engine, before anything hostile happened."""
    return llm.generate(PROMPTS[0], GREEDY)[0].outputs[0].token_ids


@settings(deadline=None, max_examples=100, derandomize=True)
@given(
    st.lists(_PARAMS, min_size=1, max_size=3),
    st.lists(st.sampled_from([0, -5, 2**70, 1.5, None, "a"]), min_size=3, max_size=3) | st.none(),
)
def test_random_sampling_params_either_fail_cleanly_or_generate(
    llm: LLM,
    expected: list[int],
    fields: list[tuple[dict[str, Any], tuple[str, Any] | None]],
    priority: list[Any] | None,
) -> None:
    params = []
    for kwargs, hostile in fields:
        try:
            params.append(SamplingParams(**{**kwargs, **dict([hostile] if hostile else [])}))
        except ValueError:
            continue  # any other exception fails the test
    if not params:
        event("every SamplingParams refused")
        return
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(params))]
    try:
        outputs = llm.generate(prompts, params, priority=priority and priority[: len(params)])
    except ValueError:
        event("refused when added")
    else:
        event("generated")
        for output, sample_params in zip(outputs, params, strict=True):
            assert len(output.outputs) == sample_params.n
            assert all(c.finish_reason in ("stop", "length") for c in output.outputs)
    assert not llm.engine_core.has_unfinished_requests()
    assert llm.generate(PROMPTS[0], GREEDY)[0].outputs[0].token_ids == expected


def test_an_interrupted_generate_leaves_nothing_running(
    llm: LLM, expected: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a fuzz of LLM: Ctrl-C inside generate() left its requests in the engine; the next
    # call stepped them too and, when they finished before its own, raised KeyError.
    step = llm.engine_core.step
    steps = iter(range(1_000))

    def interrupted_step() -> Any:
        if next(steps) == 3:
            raise KeyboardInterrupt
        return step()

    monkeypatch.setattr(llm.engine_core, "step", interrupted_step)
    long = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    with pytest.raises(KeyboardInterrupt):
        llm.generate(PROMPTS[1:], [GREEDY, long])
    assert not llm.engine_core.has_unfinished_requests()
    assert llm.engine_core.stats().scheduler.kv_cache_usage == 0
    monkeypatch.undo()
    assert llm.generate(PROMPTS[0], GREEDY)[0].outputs[0].token_ids == expected
