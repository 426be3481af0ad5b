"""The overlapped engine loop (async scheduling) driven on the CPU against the synchronous one.

On the CPU every device op finishes before it returns, so nothing overlaps in time, but the
loop is the same as on CUDA: step N+1 is scheduled with placeholders before step N's tokens are
applied, its placeholder rows are fed from step N's sampled-token tensor, requests that stop on
a stop token get one extra token computed and dropped; sampling, penalties and min_tokens read
the token in flight on the device, so every kind of request runs ahead of its tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmservice import LLM, SamplingParams
from llmservice.runtime.engine_args import EngineArgs
from llmservice.runtime.engine_core import EngineCore, EngineCoreOutput, EngineCoreRequest

PROMPTS = [
    [5],
    [9, 4, 77, 31, 8, 2, 61, 19, 3],
    [*range(3, 40), 11],
    [*range(3, 40), 12, 13, 14],
    [int(7 + (i * 37) % 280) for i in range(70)],
    [44, 45, 46],
]
MAX_TOKENS = [24 - 3 * i for i in range(len(PROMPTS))]
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "chunked_prefill": {"max_num_batched_tokens": 8},
    "no_prefix_caching": {"enable_prefix_caching": False},
    "preemption": {"num_kv_blocks": 9, "max_model_len": 128, "admission_headroom": False},
}


def _core(path: Path, async_scheduling: bool, **kwargs: Any) -> EngineCore:
    kwargs.setdefault("max_model_len", 256)
    config = EngineArgs(model=str(path), device="cpu", max_num_seqs=16, **kwargs)
    core = EngineCore(config.create_engine_config())
    core.async_scheduling = async_scheduling
    return core


def _add_all(
    core: EngineCore, stop_token_ids: list[int] | None = None, sampled: bool = False,
    history: bool = False,
) -> None:  # fmt: skip
    for i, (prompt, n) in enumerate(zip(PROMPTS, MAX_TOKENS, strict=True)):
        params = SamplingParams(
            temperature=0.0, max_tokens=n, ignore_eos=True, stop_token_ids=stop_token_ids
        )
        if sampled:  # a different mix of the device-side sampling features on each request
            params = SamplingParams(
                temperature=0.7 + 0.1 * i, top_p=(0.9, 1.0)[i % 2], top_k=(0, 40)[i % 3 == 0],
                min_p=(0.0, 0.05)[i % 2], seed=100 + i, logprobs=(None, 3)[i % 2],
                logit_bias=({}, {5: 3.0, 9: -100.0})[i % 2], max_tokens=n, ignore_eos=True,
            )  # fmt: skip
        if history:  # strong penalties and min_tokens: they read the token in flight
            params = SamplingParams(
                temperature=(0.0, 0.9)[i % 2], seed=200 + i,
                repetition_penalty=(1.0, 2.0)[i % 3 == 0], presence_penalty=(0.0, 2.0)[i % 3 == 1],
                frequency_penalty=(0.0, 1.5)[i % 3 == 2], min_tokens=min(4, n),
                stop_token_ids=[*range(3, 300, 7)], max_tokens=n, ignore_eos=True,
            )  # fmt: skip
        core.add_request(EngineCoreRequest(f"r{i}", list(prompt), params))


def _run(core: EngineCore) -> dict[str, tuple[list[int], str | None]]:
    """Request id -> (tokens, finish reason), stepping until the core is idle."""
    return _run_tokens(_run_with_logprobs(core))


def _run_tokens(
    results: dict[str, tuple[list[int], str | None, list[Any]]],
) -> dict[str, tuple[list[int], str | None]]:
    return {rid: (tokens, reason) for rid, (tokens, reason, _) in results.items()}


def _run_with_logprobs(core: EngineCore) -> dict[str, tuple[list[int], str | None, list[Any]]]:
    """Request id -> (tokens, finish reason, logprobs per token)."""
    results: dict[str, tuple[list[int], str | None, list[Any]]] = {}
    while core.has_unfinished_requests():
        for output in core.step():
            tokens, reason, logprobs = results.get(output.request_id, ([], None, []))
            if reason is not None:
                raise AssertionError(f"{output.request_id} produced a token after finishing")
            results[output.request_id] = (
                tokens + output.new_token_ids,
                output.finish_reason,
                logprobs + (output.new_logprobs or []),
            )
    return results


class _LaunchCounter:
    """Counts the async launches and the rows fed from the previous step on the device."""

    def __init__(self, core: EngineCore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.launches = 0
        self.sync_steps = 0
        runner = core.model_runner
        launch, execute = runner.launch, runner.execute

        def counted_launch(*args: Any) -> Any:
            self.launches += 1
            return launch(*args)

        def counted_execute(*args: Any) -> Any:
            self.sync_steps += 1
            return execute(*args)

        monkeypatch.setattr(runner, "launch", counted_launch)
        monkeypatch.setattr(runner, "execute", counted_execute)


@pytest.fixture(scope="module")
def llama(checkpoints: dict[str, tuple[Path, Any]]) -> Path:
    return checkpoints["llama"][0]


@pytest.mark.parametrize("mode", MODES)
def test_async_greedy_matches_sync(mode: str, llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sync = _core(llama, False, **MODES[mode])
    _add_all(sync)
    expected = _run(sync)
    core = _core(llama, True, **MODES[mode])
    counter = _LaunchCounter(core, monkeypatch)
    _add_all(core)
    assert core.step() == []  # the first call only launches step 1
    assert _run(core) == expected
    assert {r: len(t) for r, (t, _) in expected.items()} == dict(
        zip([f"r{i}" for i in range(len(PROMPTS))], MAX_TOKENS, strict=True)
    )
    assert counter.sync_steps == 0 and counter.launches > max(MAX_TOKENS)
    if mode == "preemption":
        assert core.stats().scheduler.num_preemptions_total > 0
    core.scheduler.kv_cache.check_integrity()
    assert not core.has_unfinished_requests()


@pytest.mark.parametrize("mode", MODES)
def test_async_seeded_sampling_matches_sync(
    mode: str, llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temperature, top-k/top-p/min-p, seeds and logprobs run ahead of their tokens too, with
    the same tokens and logprobs as the synchronous loop, preemption included."""
    sync = _core(llama, False, **MODES[mode])
    _add_all(sync, sampled=True)
    expected = _run_with_logprobs(sync)
    core = _core(llama, True, **MODES[mode])
    counter = _LaunchCounter(core, monkeypatch)
    _add_all(core, sampled=True)
    got = _run_with_logprobs(core)
    assert _run_tokens(got) == _run_tokens(expected)
    # Batches differ between the loops (extra rows after a finish), so float32 sums may round
    # differently: the same tokens and ranks, values within 1e-4.
    for rid, (_, _, logprobs) in expected.items():
        for ours, theirs in zip(got[rid][2], logprobs, strict=True):
            assert (ours.token_id, ours.top_token_ids) == (theirs.token_id, theirs.top_token_ids)
            assert ours.logprob == pytest.approx(theirs.logprob, abs=1e-4)
            assert ours.top_logprobs == pytest.approx(theirs.top_logprobs, abs=1e-4)
    assert counter.sync_steps == 0 and counter.launches > max(MAX_TOKENS)
    assert [len(expected[f"r{i}"][2]) for i in (0, 1)] == [0, MAX_TOKENS[1]]
    if mode == "preemption":
        assert core.stats().scheduler.num_preemptions_total > 0
    core.scheduler.kv_cache.check_integrity()


def test_seeded_tokens_survive_preemption(llama: Path) -> None:
    """A seeded request's draw depends on its seed and the token's position, so recomputing
    after a preemption (which throws a draw away in the overlapped loop) changes nothing."""
    roomy = _core(llama, False)
    _add_all(roomy, sampled=True)
    expected = _run(roomy)
    tight = _core(llama, True, **MODES["preemption"])
    _add_all(tight, sampled=True)
    assert _run(tight) == expected
    assert tight.stats().scheduler.num_preemptions_total > 0


def test_stop_token_drops_the_token_computed_after_it(llama: Path) -> None:
    sync = _core(llama, False)
    _add_all(sync)
    free_run = _run(sync)
    # A token r1 first produces midway: it stops there, with its next token already computed.
    tokens = free_run["r1"][0]
    first = next(j for j in range(2, len(tokens)) if tokens[j] not in tokens[:j])
    sync = _core(llama, False)
    _add_all(sync, stop_token_ids=[tokens[first]])
    expected = _run(sync)
    assert expected["r1"] == (tokens[: first + 1], "stop")
    core = _core(llama, True)
    _add_all(core, stop_token_ids=[tokens[first]])
    assert _run(core) == expected
    core.scheduler.kv_cache.check_integrity()


def test_abort_while_a_step_is_in_flight(llama: Path) -> None:
    sync = _core(llama, False)
    _add_all(sync)
    expected = _run(sync)
    core = _core(llama, True)
    _add_all(core)
    got: dict[str, list[int]] = {}
    while core.has_unfinished_requests():
        for output in core.step():
            got.setdefault(output.request_id, []).extend(output.new_token_ids)
        if len(got.get("r0", [])) == 3:
            core.abort_requests(["r0"])  # its next token is being computed: it is dropped
    assert got["r0"] == expected["r0"][0][:3]
    assert {r: t for r, t in got.items() if r != "r0"} == {
        r: t for r, (t, _) in expected.items() if r != "r0"
    }
    core.scheduler.kv_cache.check_integrity()


@pytest.mark.parametrize("mode", MODES)
def test_async_penalties_and_min_tokens_match_sync(
    mode: str, llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Penalties count the token of the step in flight (on the device) and min_tokens counts
    it too, so these requests run ahead of their tokens with the synchronous loop's tokens."""
    sync = _core(llama, False, **MODES[mode])
    _add_all(sync, history=True)
    expected = _run(sync)
    core = _core(llama, True, **MODES[mode])
    counter = _LaunchCounter(core, monkeypatch)
    _add_all(core, history=True)
    assert _run(core) == expected
    assert counter.sync_steps == 0 and counter.launches > 4
    # min_tokens held every stop token back for 4 tokens, and some request stopped on one.
    assert all(len(expected[f"r{i}"][0]) >= min(4, n) for i, n in enumerate(MAX_TOKENS))
    assert "stop" in {reason for _, reason in expected.values()}
    core.scheduler.kv_cache.check_integrity()


def test_generate_returns_with_the_engine_idle(llama: Path) -> None:
    """The step launched ahead for requests that have all finished is applied before
    `LLM.generate` returns: nothing is left in flight for the next call."""
    llm = LLM(str(llama), device="cpu", max_model_len=256)
    llm.engine_core.async_scheduling = True
    greedy = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    first = llm.generate({"prompt_token_ids": PROMPTS[1]}, greedy)
    assert not llm.engine_core.has_unfinished_requests()
    again = llm.generate({"prompt_token_ids": PROMPTS[1]}, greedy)
    assert again[0].outputs[0].token_ids == first[0].outputs[0].token_ids
    assert len(first[0].outputs[0].token_ids) == 6


def test_generate_launches_the_first_step_before_adding_the_rest(
    llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overlapped: once the prompts added fill a step, `LLM.generate` launches it and adds the
    rest while it runs. The outputs are the synchronous engine's, and a bad prompt after the
    launch still fails the call with nothing left queued."""
    prompts: list[Any] = [
        {"prompt_token_ids": [3 + (i * 7 + j) % 50 for j in range(20)]} for i in range(6)
    ]
    greedy = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)
    kwargs: dict[str, Any] = {"device": "cpu", "max_model_len": 256, "max_num_batched_tokens": 32}
    expected = [o.outputs[0].token_ids for o in LLM(str(llama), **kwargs).generate(prompts, greedy)]
    llm = LLM(str(llama), **kwargs)
    llm.engine_core.async_scheduling = True
    known_at_step: list[int] = []
    step = llm.engine_core.step

    def counting_step() -> list[EngineCoreOutput]:
        stats = llm.engine_core.stats().scheduler
        known_at_step.append(stats.num_waiting + stats.num_running)
        return step()

    monkeypatch.setattr(llm.engine_core, "step", counting_step)
    assert [o.outputs[0].token_ids for o in llm.generate(prompts, greedy)] == expected
    assert known_at_step[0] == 2  # 40 prompt tokens fill a 32-token step
    too_long = {"prompt_token_ids": [5] * 300}
    known_at_step.clear()
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate([*prompts[:3], too_long], greedy)
    # The first step was in flight when the bad prompt came; one more call applied it.
    assert known_at_step == [2, 0]
    assert not llm.engine_core.has_unfinished_requests()
    assert [o.outputs[0].token_ids for o in llm.generate(prompts, greedy)] == expected
    # With priorities the first step waits for every prompt: the last may be served first.
    known_at_step.clear()
    llm.generate(prompts, greedy, priority=[0] * 6)
    assert known_at_step[0] == 6
