"""Faults on real servers: a killed or hung EngineCore, and SIGTERM under load."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from server_harness import ServerProcess, start_server

pytestmark = pytest.mark.slow


def _wait_status(server: ServerProcess, path: str, status: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if server.get(path)[0] == status:
                return True
        except OSError:
            return False  # the server is gone already
        time.sleep(0.05)
    return False


async def _read_events(response: aiohttp.ClientResponse) -> list[Any]:
    events: list[Any] = []
    async for line in response.content:
        if line.startswith(b"data: "):
            payload = line[6:].strip()
            events.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return events


def test_a_killed_engine_core_fails_health_and_the_server_exits_nonzero(
    tiny_model: Path, tmp_path: Path
) -> None:
    server = start_server(tiny_model, tmp_path)

    async def stream_while_the_core_dies() -> list[Any]:
        async with aiohttp.ClientSession() as session:
            body = {"prompt": "quick fox", "max_tokens": 250, "ignore_eos": True, "stream": True}
            async with session.post(server.url + "/v1/completions", json=body) as response:
                await response.content.readline()  # the stream has begun
                os.kill(server.core_pid(), signal.SIGKILL)
                return await _read_events(response)

    try:
        events = asyncio.run(stream_while_the_core_dies())
        assert "error" in events[-2] and events[-1] == "[DONE]"
        assert _wait_status(server, "/health", 503)
        assert server.process.wait(timeout=30) != 0
    finally:
        server.stop()
    assert "the engine core process exited" in server.log()


def test_a_model_without_tokenizer_then_a_hung_engine_core(
    tiny_model: Path, tmp_path: Path
) -> None:
    # Random weights from config.json alone (load_format dummy), no tokenizer files.
    model = tmp_path / "config-only"
    model.mkdir()
    shutil.copy(tiny_model / "config.json", model / "config.json")
    server = start_server(
        model, tmp_path, "--load-format", "dummy", "--engine-heartbeat-timeout", "3"
    )
    try:
        # token-id prompts work, and a stream has a chunk per token although nothing decodes
        body = {"prompt": [5, 6, 7], "max_tokens": 4, "ignore_eos": True, "stream": True}
        events = asyncio.run(_stream_events(server.url + "/v1/completions", body))
        assert len(events) == 5 and events[-1] == "[DONE]"
        status, _, answer = server.post("/v1/completions", {"prompt": "text", "max_tokens": 2})
        assert status == 400 and "no tokenizer" in answer["error"]["message"]

        core_pid = server.core_pid()
        os.kill(core_pid, signal.SIGSTOP)
        assert _wait_status(server, "/health", 503)
        assert server.process.wait(timeout=30) != 0
        assert "has not reported for 3s (hung)" in server.log()
    finally:
        server.stop()
        with contextlib.suppress(ProcessLookupError, AssertionError):
            os.kill(server.core_pid(), signal.SIGKILL)  # the server kills it; this makes sure


async def _stream_events(url: str, body: dict[str, Any]) -> list[Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 200
        return await _read_events(response)


def test_sigterm_under_load_finishes_in_flight_and_refuses_new_requests(
    tiny_model: Path, tmp_path: Path
) -> None:
    server = start_server(
        tiny_model, tmp_path, "--max-num-seqs", "2", "--max-waiting-requests", "2",
        "--shutdown-timeout", "120",
    )  # fmt: skip

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            url = server.url + "/v1/completions"

            body = {"prompt": "quick fox", "max_tokens": 60, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}  # fmt: skip

            async def read(response: aiohttp.ClientResponse) -> list[Any]:
                async with response:
                    assert response.status == 200
                    return await _read_events(response)

            # Two run (max_num_seqs 2) and two wait (the waiting limit). 60 tokens take ~80 ms
            # on the CPU, so waiting on timing or on the core's metrics raced with the first pair
            # finishing. With the core stopped nothing can finish; a stream's headers are sent
            # only after its request is submitted, so four open streams are four in flight, and
            # they still are when SIGTERM comes.
            core_pid = server.core_pid()
            os.kill(core_pid, signal.SIGSTOP)
            try:
                opened = await asyncio.gather(*(session.post(url, json=body) for _ in range(4)))
                async with session.post(url, json={"prompt": "x", "max_tokens": 2}) as refused:
                    assert refused.status == 503 and refused.headers["Retry-After"]
                    message = (await refused.json())["error"]["message"]
                    assert "too many requests waiting" in message
                server.process.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(_wait_status, server, "/ready", 503)
                async with session.post(url, json={"prompt": "x", "max_tokens": 2}) as refused:
                    assert refused.status == 503 and refused.headers["Retry-After"]
                    assert "shutting down" in (await refused.json())["error"]["message"]
            finally:
                os.kill(core_pid, signal.SIGCONT)
            in_flight = [read(response) for response in opened]
            for events in await asyncio.gather(*in_flight):
                assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 60
                assert [c["choices"][0]["finish_reason"] for c in events[:-2]][-1] == "length"

    try:
        asyncio.run(scenario())
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()


def test_preemption_keeps_answers_and_ttft_once_then_sigterm_aborts_what_outlives_the_timeout(
    tiny_model: Path, tmp_path: Path
) -> None:
    # 6 usable KV blocks of 16 tokens: four 64-token requests cannot all hold their blocks.
    server = start_server(
        tiny_model, tmp_path, "--shutdown-timeout", "0", "--max-model-len", "96",
        "--num-kv-blocks", "7", "--max-num-seqs", "4", "--max-log-len", "4",
        "--no-admission-headroom",
    )  # fmt: skip

    async def preempting_load() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            body = {"prompt": "quick fox", "max_tokens": 60, "ignore_eos": True}
            url = server.url + "/v1/completions"
            responses = await asyncio.gather(*(session.post(url, json=body) for _ in range(4)))
            return [await response.json() for response in responses]

    async def abort_by_sigterm() -> tuple[list[Any], dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            url = server.url + "/v1/completions"
            body = {"prompt": "quick fox", "max_tokens": 90, "ignore_eos": True}
            plain = asyncio.create_task(session.post(url, json=body))
            async with session.post(url, json={**body, "stream": True}) as response:
                await response.content.readline()
                server.process.send_signal(signal.SIGTERM)
                events = await _read_events(response)
            async with await plain as answer:
                return events, await answer.json()

    try:
        answers = asyncio.run(preempting_load())
        assert [a["usage"]["completion_tokens"] for a in answers] == [60] * 4
        metrics = server.metrics()
        assert metrics["llmservice:num_preemptions_total"] > 0
        assert metrics["llmservice:time_to_first_token_seconds_count"] == 4
        assert metrics['llmservice:request_success_total{finished_reason="length"}'] == 4
        assert "prompt 'quic'" in server.log()  # --max-log-len

        events, answer = asyncio.run(abort_by_sigterm())
        assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "abort"
        assert answer["choices"][0]["finish_reason"] == "abort"
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()
