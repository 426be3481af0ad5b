"""Regression tests for what a fuzz of the server found, each at the smallest level that shows it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.test_utils import TestClient, TestServer

from llmservice.runtime.server.app import build_app
from llmservice.runtime.server.config import ServerConfig
from llmservice.runtime.server.core_client import EngineDeadError
from llmservice.runtime.server.metrics import ServerMetrics
from llmservice.runtime.server.serving_common import MAX_STOP_STRINGS, ServingContext
from llmservice.runtime.server.sse import ClientGone, SSEStream
from llmservice.runtime.server.state import ServerState


class _OpenTransport:
    def is_closing(self) -> bool:
        return False


class _FakeRequest:
    transport = _OpenTransport()


class _ResponseClosedAtEof:
    """A response whose client leaves between the last event and the end of the body."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    async def write_eof(self) -> None:
        raise ClientConnectionResetError("Cannot write to closing transport")


def test_a_client_that_leaves_at_the_end_of_a_stream_is_gone_not_an_internal_error() -> None:
    # Found by the storm: the handler got ClientConnectionResetError from write_eof, and the
    # error middleware logged a traceback and answered 500.
    stream = SSEStream(_FakeRequest(), "cmpl-1")  # type: ignore[arg-type]
    response = _ResponseClosedAtEof()
    stream._response = response  # type: ignore[assignment]

    async def close() -> Any:
        await stream.close()

    with pytest.raises(ClientGone):
        asyncio.run(close())
    assert response.written == [b"data: [DONE]\n\n"]


class _RecordingRouter:
    """Records what passed validation; answers as a dead engine (503) so nothing runs."""

    def __init__(self) -> None:
        self.submitted: list[tuple[int, int | None]] = []

    def submit(self, request_id: str, prompts: list[Any], params: Any, *args: Any) -> Any:
        self.submitted.append((len(prompts) * params.n, params.max_tokens))
        raise EngineDeadError("not started")


def _post_completions(
    body: dict[str, Any], tokenizer: Any = None
) -> tuple[int, dict[str, Any], _RecordingRouter]:
    router = _RecordingRouter()
    state = ServerState(max_waiting=None, retry_after_s=1, waiting_estimate=lambda: 0)
    state.loaded = True
    config = ServerConfig(model="m", served_model_names=("m",))  # cap: 32 x 64 tokens
    context = ServingContext(
        config=config,
        tokenizer=tokenizer,
        router=router,  # type: ignore[arg-type]
        state=state,
        max_model_len=64,
        vocab_size=100,
        scheduling_policy="fcfs",
    )

    async def post() -> tuple[int, dict[str, Any]]:
        app = build_app(context, ServerMetrics(config.latency_buckets))
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/v1/completions", json=body)
            return response.status, await response.json()

    status, answer = asyncio.run(post())
    return status, answer, router


@pytest.mark.parametrize(
    "body",
    [
        # max_tokens null: each of the 64 samples may fill its room (62 tokens): 3,968 > 2,048
        {"prompt": [1, 2], "n": 64, "max_tokens": None},
        # a batch of 40 prompts, 60 tokens each: 2,400 > 2,048
        {"prompt": [[1]] * 40, "max_tokens": 60},
    ],
)
def test_the_output_cap_covers_a_null_max_tokens_and_every_prompt_of_a_batch(
    body: dict[str, Any],
) -> None:
    # Found by the storm: {"prompt": "quick", "n": 128, "max_tokens": null} ran 128 full-length
    # sequences (16,128 tokens, two minutes of the CPU engine) past the cap on n * max_tokens,
    # which only looked at a max_tokens the client had sent and at one prompt.
    status, answer, router = _post_completions(body)
    assert status == 400, answer
    assert "is above the limit 2048" in answer["error"]["message"]
    assert answer["error"]["param"] == "max_tokens"
    assert router.submitted == []


def test_a_batch_under_the_output_cap_is_submitted() -> None:
    status, _, router = _post_completions({"prompt": [[1], [2, 3]], "n": 2, "max_tokens": None})
    assert status == 503  # the recording router's dead engine, after validation passed
    assert router.submitted == [(4, None)]


def test_more_stop_strings_than_the_limit_get_a_400() -> None:
    # Found by hand after the storm: {"stop": ["zq"] * 1_000_000, "max_tokens": 20} was
    # accepted, and searching a million stop strings after each token blocked the event loop
    # (/health answered after 2.7 s; a 32 MiB body with n > 1 would fail the liveness probe).
    status, answer, router = _post_completions(
        {"prompt": [1], "max_tokens": 2, "stop": ["zq"] * (MAX_STOP_STRINGS + 1)}
    )
    assert (status, answer["error"]["param"]) == (400, "stop")
    assert router.submitted == []
    status, _, router = _post_completions(
        {"prompt": [1], "max_tokens": 2, "stop": ["zq"] * MAX_STOP_STRINGS}
    )
    assert status == 503 and router.submitted == [(1, 2)]


class _ThreadRecordingTokenizer:
    """Encodes each character as token 1; records the threads it ran in."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.threads.add(threading.get_ident())
        return [1] * len(text)


def test_a_batch_of_text_prompts_is_tokenized_off_the_event_loop() -> None:
    # Found by hand after the storm: {"prompt": ["ab"] * 1_000_000} was tokenized one short
    # prompt at a time on the event loop: /health (and every stream) waited 19 s.
    tokenizer = _ThreadRecordingTokenizer()
    status, _, router = _post_completions({"prompt": ["ab", "cd", "e"], "max_tokens": 1}, tokenizer)
    assert status == 503 and router.submitted == [(3, 1)]  # validated, then submitted
    assert tokenizer.threads and threading.main_thread().ident not in tokenizer.threads
