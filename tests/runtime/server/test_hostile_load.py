"""A seeded storm of random requests against one server with a tight KV cache, chunked prefill
and the priority policy: valid bodies with extreme-but-legal values, bodies with one hostile
field, and streaming clients that leave midway. Every answer is a 200 that completes or a 400 in
OpenAI's envelope (never a 500, never a hang); afterwards nothing runs, the KV cache is empty, the
log holds no traceback, and a greedy request writes what it wrote before the storm."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from server_harness import API_KEY, ServerProcess, start_server, wait_idle

pytestmark = pytest.mark.slow

NUM_REQUESTS = 100
CONCURRENCY = 16
SEED = 20261122
# The long ones span several 16-token blocks: the samples of n > 1 wait for their leader's
# cached prompt (prefix caching), and prompts are prefilled in chunks.
PROMPTS = (
    "quick fox", "the lazy dog", "\U0001f600 \u00e9\u00e8 \x00", "<|go|>", "x", " ",
    "numbers 0123456789 and punctuation " * 3, "a reasoning model thinks before it answers " * 2,
)  # fmt: skip
# Legal values at the edges: the sampler must survive them (overflow to inf, underflow to 0).
VALID: dict[str, tuple[Any, ...]] = {
    "temperature": (0, 1e-5, 1.0000001e-5, 0.01, 1, 100, 1e30, 3.4e38, 1e300),
    "top_p": (5e-324, 1e-300, 0.1, 0.9, 1),
    "min_p": (0, 1e-300, 0.2, 1),
    "top_k": (-1, 0, 1, 5, 2**63 - 1),
    "repetition_penalty": (1e-300, 1e-45, 0.5, 2, 1e30, 1e300),
    "presence_penalty": (-2, 2, 0.5),
    "frequency_penalty": (-2, 2, 0.5),
    "seed": (None, 0, -1, 2**63 - 1, -(2**63)),
    "min_tokens": (0, 1, 3),
    "priority": (-(2**63), -3, 0, 5, 2**63 - 1, 2**80),
    "stop": ("o", ["a", " "], "\u00e9", "\U0001f600", "<|end|>", ["x" * 300]),
    "stop_token_ids": ([0], [1, 2, 3], [325], list(range(50))),
    "ignore_eos": (True,),
    "include_stop_str_in_output": (True,),
    "skip_special_tokens": (False,),
}
# One of these replaces a field of a valid body: each must get a 400 naming the field.
HOSTILE: tuple[tuple[str, Any], ...] = (
    ("top_k", 2**63),
    ("top_k", -2),
    ("seed", 2**64),
    ("min_tokens", 2**63),
    ("temperature", -1),
    ("top_p", 0),
    ("min_p", 1.5),
    ("repetition_penalty", 0),
    ("presence_penalty", 2.0001),
    ("stop_token_ids", [326]),
    ("stop_token_ids", [2**63]),
    ("stop", [""]),
    ("max_tokens", 0),
    ("max_tokens", 2**63),
    ("n", 0),
    ("n", 129),
)


@dataclass(frozen=True)
class Call:
    path: str
    body: dict[str, Any]
    hostile_param: str | None
    """The field made hostile (a 400 naming it is expected); None for a valid body."""
    leave_after: int | None
    """A streaming client leaves after this many chunks."""


def _calls(rng: random.Random) -> list[Call]:
    calls = []
    for _ in range(NUM_REQUESTS):
        chat = rng.random() < 0.4
        body: dict[str, Any] = {
            name: rng.choice(values) for name, values in VALID.items() if rng.random() < 0.25
        }
        body["max_tokens"] = rng.choice((1, 5, 16, 40))
        body["min_tokens"] = min(body.get("min_tokens", 0), body["max_tokens"])
        body["n"] = rng.choice((1, 1, 2, 3))
        body["stream"] = rng.random() < 0.5
        if body["stream"] and rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
        if chat:
            path = "/v1/chat/completions"
            body["messages"] = [{"role": "user", "content": rng.choice(PROMPTS)}]
            if rng.random() < 0.3:
                body["logprobs"] = True
                body["top_logprobs"] = rng.choice((0, 5, 20))
        else:
            path = "/v1/completions"
            body["prompt"] = rng.choice(
                (rng.choice(PROMPTS), [rng.randrange(326) for _ in range(rng.randrange(1, 30))],
                 [rng.choice(PROMPTS), rng.choice(PROMPTS)])
            )  # fmt: skip
            if rng.random() < 0.3:
                body["logprobs"] = rng.choice((0, 5, 20))
            if rng.random() < 0.2:
                body["echo"] = True  # with logprobs: the prompt's logprobs too
        hostile_param = None
        if rng.random() < 0.3:
            hostile_param, value = rng.choice(HOSTILE)
            body[hostile_param] = value
        leave_after = rng.choice((None, None, 0, 2)) if body["stream"] else None
        calls.append(Call(path, body, hostile_param, leave_after))
    return calls


def _is_envelope(answer: Any) -> bool:
    return (
        isinstance(answer, dict)
        and set(answer) == {"error"}
        and {"message", "type", "param", "code"} <= set(answer["error"])
    )


async def _call(session: aiohttp.ClientSession, url: str, call: Call) -> str | None:
    """None when the answer is right for the call; else what was wrong."""
    async with session.post(url + call.path, json=call.body) as response:
        if response.status != 200:
            answer = json.loads(await response.text())
            expected = call.hostile_param is not None and response.status == 400
            if not expected or not _is_envelope(answer):
                return f"{response.status} {answer}"
            param = answer["error"]["param"]
            return None if param == call.hostile_param else f"param {param}: {answer}"
        if call.hostile_param is not None:
            return "200 for a hostile body"
        if not call.body["stream"]:
            choices = (await response.json())["choices"]
            reasons = {choice["finish_reason"] for choice in choices}
            return None if reasons <= {"stop", "length"} else f"finish reasons {reasons}"
        chunks = 0
        async for line in response.content:
            payload = line.removeprefix(b"data: ").strip()
            if not line.startswith(b"data: "):
                continue
            if payload == b"[DONE]":
                return None
            if "error" in json.loads(payload):
                return f"error event {payload!r}"
            chunks += 1
            if call.leave_after is not None and chunks > call.leave_after:
                return None  # leaves: the connection closes with the session's release
        return "the stream ended without [DONE]"


async def _storm(server: ServerProcess, calls: list[Call]) -> list[tuple[Call, str]]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    limit = asyncio.Semaphore(CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def one(call: Call) -> str | None:
            async with limit:
                return await _call(session, server.url, call)

        problems = await asyncio.gather(*(one(call) for call in calls))
    return [(call, problem) for call, problem in zip(calls, problems, strict=True) if problem]


def _greedy_text(server: ServerProcess) -> str:
    body = {"prompt": "quick fox", "max_tokens": 30, "temperature": 0, "ignore_eos": True}
    status, _, answer = server.post("/v1/completions", body)
    assert status == 200, answer
    return str(answer["choices"][0]["text"])


def test_a_storm_of_random_and_hostile_requests_leaves_the_server_as_it_was(
    tiny_model: Path, tmp_path: Path
) -> None:
    # 8 usable KV blocks of 16 tokens for 8 sequences (preemption), 32-token steps (chunked
    # prefill), no waiting limit in reach (no 503 that would depend on timing).
    server = start_server(
        tiny_model, tmp_path, "--api-key", API_KEY, "--reasoning-parser", "qwen3",
        "--max-model-len", "128", "--num-kv-blocks", "9", "--max-num-batched-tokens", "32",
        "--max-num-seqs", "8", "--scheduling-policy", "priority", "--no-admission-headroom",
        "--max-waiting-requests", "100000",
    )  # fmt: skip
    try:
        before = _greedy_text(server)
        problems = asyncio.run(_storm(server, _calls(random.Random(SEED))))
        assert problems == []
        metrics = wait_idle(server)
        assert metrics["llmservice:num_requests_running"] == 0
        assert metrics["llmservice:num_requests_waiting"] == 0
        assert metrics["llmservice:kv_cache_usage_perc"] == 0
        assert metrics["llmservice:num_preemptions_total"] > 0
        assert server.get("/health")[0] == 200
        assert _greedy_text(server) == before
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()
