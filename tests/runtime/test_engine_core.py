"""EngineCore: token-level requests, stop tokens and EOS, aborts, errors that spare the others."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

from llmservice import SamplingParams
from llmservice.runtime.engine_args import EngineArgs
from llmservice.runtime.engine_core import EngineCore, EngineCoreOutput, EngineCoreRequest
from llmservice.runtime.outputs import TokenLogprobs

PROMPT = [5, 17, 33, 250, 7, 8, 90]


def _core(path: Path, **kwargs: Any) -> EngineCore:
    return EngineCore(EngineArgs(model=str(path), device="cpu", **kwargs).create_engine_config())


def _request(request_id: str, prompt: list[int] = PROMPT, **params: Any) -> EngineCoreRequest:
    params.setdefault("temperature", 0.0)
    return EngineCoreRequest(request_id, list(prompt), SamplingParams(**params))


def _run(core: EngineCore) -> dict[str, list[EngineCoreOutput]]:
    outputs: dict[str, list[EngineCoreOutput]] = {}
    while core.has_unfinished_requests():
        for output in core.step():
            outputs.setdefault(output.request_id, []).append(output)
    return outputs


def _tokens(outputs: list[EngineCoreOutput]) -> list[int]:
    return [token for output in outputs for token in output.new_token_ids]


@pytest.fixture(scope="module")
def llama(checkpoints: dict[str, tuple[Path, Any]]) -> Path:
    return checkpoints["llama"][0]


@pytest.fixture(scope="module")
def greedy_tokens(llama: Path) -> list[int]:
    core = _core(llama)
    core.add_request(_request("a", max_tokens=10, ignore_eos=True))
    return _tokens(_run(core)["a"])


def test_requests_and_outputs_are_picklable() -> None:
    request = _request("x", stop=["a"], seed=3)
    assert pickle.loads(pickle.dumps(request)) == request
    output = EngineCoreOutput("x", [4], [TokenLogprobs(4, -0.1, 1, (4,), (-0.1,))], "stop", 9, 16)
    assert pickle.loads(pickle.dumps(output)) == output


def test_bad_requests_fail_alone(llama: Path, greedy_tokens: list[int]) -> None:
    core = _core(llama, max_model_len=64)
    core.add_request(_request("good", max_tokens=10, ignore_eos=True))
    bad = [
        (_request("long", prompt=list(range(3, 67))), "max_model_len=64"),
        (_request("vocab", prompt=[1, 300]), r"token ids in \[0, 300\)"),
        (_request("negative", prompt=[1, -1]), r"token ids in \[0, 300\)"),
        (_request("bool", prompt=[1, True]), "must be a list of token ids"),
        (_request("float", prompt=[1, 2.0]), "must be a list of token ids"),
        (_request("empty", prompt=[]), "empty prompt"),
        (_request("good"), "already in the engine"),
    ]
    served: list[EngineCoreOutput] = []
    for request, message in bad:
        with pytest.raises(ValueError, match=message):
            core.add_request(request)
        served += core.step()  # the engine keeps serving between the failures
    served += _run(core).get("good", [])
    assert {output.request_id for output in served} == {"good"}
    assert _tokens(served) == greedy_tokens
    assert served[-1].finish_reason == "length"


def test_abort_frees_blocks_and_is_idempotent(llama: Path, greedy_tokens: list[int]) -> None:
    core = _core(llama)
    core.add_request(_request("keep", max_tokens=10, ignore_eos=True))
    core.add_request(_request("drop", prompt=list(range(3, 60)), max_tokens=10))
    first = {o.request_id for o in core.step()}
    assert first == {"keep", "drop"}
    core.abort_requests(["drop", "never-existed"])
    core.abort_requests(["drop"])
    outputs = _run(core)
    assert list(outputs) == ["keep"]
    assert core.stats().scheduler.kv_cache_usage == 0.0
    core.scheduler.kv_cache.check_integrity()


def test_stop_token_ids_min_tokens_and_totals(llama: Path, greedy_tokens: list[int]) -> None:
    core = _core(llama)
    stop = greedy_tokens[3]
    first = greedy_tokens.index(stop)
    core.add_request(_request("stop", max_tokens=10, stop_token_ids=[stop], ignore_eos=True))
    core.add_request(
        _request(
            "late", max_tokens=10, stop_token_ids=[stop], min_tokens=first + 2, ignore_eos=True
        )
    )
    outputs = _run(core)
    assert _tokens(outputs["stop"]) == greedy_tokens[: first + 1]  # the stop token is included
    assert (outputs["stop"][-1].finish_reason, outputs["stop"][-1].stop_reason) == ("stop", stop)
    # Before min_tokens the stop token is masked out, so another token is chosen in its place.
    late = _tokens(outputs["late"])
    assert late[:first] == greedy_tokens[:first]
    assert stop not in late[: first + 2] and len(late) > first + 2
    stats = core.stats()
    assert stats.prompt_tokens_total == 2 * len(PROMPT)
    assert stats.generation_tokens_total == len(_tokens(outputs["stop"])) + len(late)


def test_eos_from_generation_config(llama: Path, greedy_tokens: list[int], tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(llama, folder)
    eos = greedy_tokens[4]
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos]}))
    core = _core(folder)
    core.add_request(_request("eos", max_tokens=10))
    core.add_request(_request("ignore", max_tokens=10, ignore_eos=True))
    outputs = _run(core)
    assert _tokens(outputs["eos"]) == greedy_tokens[: greedy_tokens.index(eos) + 1]
    assert (outputs["eos"][-1].finish_reason, outputs["eos"][-1].stop_reason) == ("stop", None)
    assert _tokens(outputs["ignore"]) == greedy_tokens


def test_max_tokens_none_runs_to_max_model_len(llama: Path) -> None:
    core = _core(llama, max_model_len=32)
    core.add_request(_request("all", max_tokens=None, ignore_eos=True))
    outputs = _run(core)["all"]
    assert len(PROMPT) + len(_tokens(outputs)) == 32
    assert outputs[-1].finish_reason == "length"


def test_prefix_follower_waits_for_its_leader_or_its_abort(llama: Path) -> None:
    prompt = list(range(3, 60))  # 3 full blocks before the last token
    core = _core(llama)
    core.add_request(_request("leader", prompt=prompt, max_tokens=3))
    follower = EngineCoreRequest("follower", prompt, SamplingParams(temperature=0.0, max_tokens=3))
    follower.prefix_leader = "leader"
    core.add_request(follower)
    first = core.step()
    assert [o.request_id for o in first] == ["leader"]  # the follower waited
    outputs = _run(core)
    assert core.stats().scheduler.prefix_cache_hits == 48  # its 3 full prompt blocks
    assert _tokens(outputs["follower"]) == _tokens(first + outputs["leader"])  # same greedy text
    # A follower whose leader is aborted before its prompt is computed starts on its own.
    core.add_request(_request("leader2", prompt=[7, *prompt], max_tokens=3))
    late = EngineCoreRequest("late", [7, *prompt], SamplingParams(temperature=0.0, max_tokens=3))
    late.prefix_leader = "leader2"
    core.add_request(late)
    core.abort_requests(["leader2"])
    assert list(_run(core)) == ["late"]
