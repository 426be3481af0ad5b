"""Metrics move as requests flow; a client that leaves has its request aborted and KV freed."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
from server_harness import API_KEY, ServerProcess, wait_for, wait_idle

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
ABORTED = 'llmservice:request_success_total{finished_reason="abort"}'


def test_metrics_move_as_requests_flow(api_server: ServerProcess) -> None:
    before = wait_idle(api_server)
    status, _, answer = api_server.post(
        "/v1/completions", {"model": "tiny", "prompt": "<|go|>", "max_tokens": 10}
    )
    assert status == 200 and answer["usage"]["completion_tokens"] == 5
    after = wait_idle(api_server)

    def delta(name: str) -> float:
        return after[name] - before[name]

    assert delta("llmservice:prompt_tokens_total") == 1
    assert delta("llmservice:generation_tokens_total") == 5
    assert delta('llmservice:request_success_total{finished_reason="stop"}') == 1
    assert delta("llmservice:time_to_first_token_seconds_count") == 1
    assert delta("llmservice:e2e_request_latency_seconds_count") == 1
    assert delta("llmservice:request_queue_time_seconds_count") == 1
    assert delta("llmservice:inter_token_latency_seconds_count") == 4
    # Per request: 1 prompt token and 5 generated, timed from first scheduled.
    assert delta("llmservice:request_prompt_tokens_sum") == 1
    assert delta("llmservice:request_generation_tokens_sum") == 5
    assert delta('llmservice:request_generation_tokens_bucket{le="5.0"}') == 1
    assert delta('llmservice:request_generation_tokens_bucket{le="2.0"}') == 0
    for name in ("prefill", "decode", "inference"):
        assert delta(f"llmservice:request_{name}_time_seconds_count") == 1
    assert delta("llmservice:request_inference_time_seconds_sum") >= delta(
        "llmservice:request_decode_time_seconds_sum"
    )
    assert delta("llmservice:prefix_cache_queries_total") >= 0
    assert after["llmservice:num_preemptions_total"] >= 0
    assert 'llmservice:time_to_first_token_seconds_bucket{le="320.0"}' in after


def test_a_streaming_client_that_leaves_is_aborted(api_server: ServerProcess) -> None:
    before = wait_idle(api_server)[ABORTED]

    async def read_two_chunks_and_leave() -> None:
        async with aiohttp.ClientSession(headers=HEADERS) as session:
            body = {"prompt": "quick fox", "max_tokens": 250, "stream": True, "ignore_eos": True}
            async with session.post(api_server.url + "/v1/completions", json=body) as response:
                assert response.status == 200
                await response.content.readline()
                await response.content.readline()
            # leaving the block closes the connection mid-stream

    asyncio.run(read_two_chunks_and_leave())
    assert wait_for(api_server, ABORTED, before + 1) == before + 1
    assert wait_idle(api_server)["llmservice:kv_cache_usage_perc"] == 0
    assert "left the stream; aborting it" in api_server.log()


def test_a_waiting_non_streaming_client_that_leaves_is_aborted(api_server: ServerProcess) -> None:
    before = wait_idle(api_server)[ABORTED]

    async def post_and_give_up() -> None:
        timeout = aiohttp.ClientTimeout(total=0.3)
        async with aiohttp.ClientSession(headers=HEADERS, timeout=timeout) as session:
            body = {"prompt": "quick fox", "max_tokens": 240, "n": 8, "ignore_eos": True}
            try:
                async with session.post(api_server.url + "/v1/completions", json=body):
                    raise AssertionError("the request finished before the client left")
            except TimeoutError:
                pass

    # The 8 x 240 tokens take ~0.7 s on the CPU against the client's 0.3 s plus the 0.2 s
    # disconnect poll: too close to rely on. With the engine core stopped the request cannot
    # finish before the client leaves; the abort is counted by the API process.
    core_pid = api_server.core_pid()
    os.kill(core_pid, signal.SIGSTOP)
    try:
        asyncio.run(post_and_give_up())
        assert wait_for(api_server, ABORTED, before + 8) == before + 8
    finally:
        os.kill(core_pid, signal.SIGCONT)
    assert wait_idle(api_server)["llmservice:kv_cache_usage_perc"] == 0
    assert "disconnected; aborting it" in api_server.log()
