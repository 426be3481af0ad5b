"""Admission and request-level checks, without a server (pure functions and small objects)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from llmservice.runtime.server.config import ServerConfig
from llmservice.runtime.server.errors import APIError
from llmservice.runtime.server.protocol import ChatCompletionRequest, CompletionRequest
from llmservice.runtime.server.serving_common import ServingContext, check_common, check_prompt
from llmservice.runtime.server.state import ServerState


def _context(policy: str = "fcfs", max_model_len: int = 64) -> ServingContext:
    state = ServerState(max_waiting=4, retry_after_s=3, waiting_estimate=lambda: 0)
    return ServingContext(
        config=ServerConfig(model="m", served_model_names=("m",)),
        tokenizer=None,
        router=None,  # type: ignore[arg-type]  # not used by the checks
        state=state,
        max_model_len=max_model_len,
        vocab_size=100,
        scheduling_policy=policy,
    )


def _error(call: Any, *args: Any) -> APIError:
    with pytest.raises(APIError) as info:
        call(*args)
    return info.value


def test_priority_needs_the_priority_policy() -> None:
    body = CompletionRequest.model_validate_json('{"prompt": "x", "priority": -1}')
    assert _error(check_common, body, _context("fcfs"), "id").param == "priority"
    check_common(body, _context("priority"), "id")


def test_the_waiting_limit_answers_503_with_retry_after() -> None:
    waiting = [0]
    state = ServerState(max_waiting=4, retry_after_s=3, waiting_estimate=lambda: waiting[0])
    state.admit(10)  # an empty queue admits even a request larger than the limit
    waiting[0] = 3
    state.admit(1)
    error = _error(state.admit, 2)
    assert (error.status, error.headers["Retry-After"]) == (503, "3")


def test_draining_refuses_everything_and_is_not_ready() -> None:
    state = ServerState(max_waiting=4, retry_after_s=1, waiting_estimate=lambda: 0)
    state.loaded = True
    assert state.ready
    state.draining = True
    assert not state.ready
    assert _error(state.check_open).status == 503
    assert _error(state.admit, 1).status == 503


def test_the_prompt_must_leave_room_for_the_output() -> None:
    context = _context(max_model_len=8)
    assert check_prompt([1, 2, 3], (None, "max_tokens"), "prompt", context) == 5
    assert check_prompt([1, 2, 3], (5, "max_tokens"), "prompt", context) == 5
    error = _error(check_prompt, [1, 2, 3], (6, "max_completion_tokens"), "messages", context)
    assert error.param == "max_completion_tokens"
    assert (
        _error(check_prompt, [1] * 8, (None, "max_tokens"), "messages", context).param == "messages"
    )
    assert _error(check_prompt, [100], (1, "max_tokens"), "prompt", context).param == "prompt"


def test_unknown_fields_are_kept_aside_and_reported() -> None:
    body = ChatCompletionRequest.model_validate_json(
        '{"messages": [{"role": "user", "content": "x"}], "zzz": 1, "aaa": {}}'
    )
    assert body.unknown_fields() == ["aaa", "zzz"]


def test_an_engine_that_died_after_admission_answers_503_not_500() -> None:
    """The core can die between the admission check and the submit, before the lifecycle
    marks the failure: the request gets 503 with Retry-After, not an internal error."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from llmservice.runtime.server.app import build_app
    from llmservice.runtime.server.core_client import EngineDeadError
    from llmservice.runtime.server.metrics import ServerMetrics

    class DeadRouter:
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            raise EngineDeadError("the engine core failed")

    context = dataclasses.replace(_context(), router=DeadRouter())
    config = context.config

    async def post() -> tuple[int, str | None, Any]:
        app = build_app(context, ServerMetrics(config.latency_buckets))
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/v1/completions", json={"prompt": [1, 2]})
            return response.status, response.headers.get("Retry-After"), await response.json()

    status, retry_after, body = asyncio.run(post())
    assert (status, retry_after) == (503, "3")
    assert body["error"]["message"] == "the engine is not available"
