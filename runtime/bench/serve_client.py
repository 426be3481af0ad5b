"""The serving benchmark's client: streaming `/v1/completions` requests at Poisson arrivals.

Each request sends token ids as the prompt (`"prompt": [ids]`, as OpenAI's API allows), asks for
exactly `max_tokens` tokens (`ignore_eos`) with `stream: true` and
`stream_options.include_usage`, and times the server-sent events as they arrive. As vLLM's
`bench serve`, every chunk with a choice counts as a token event (its text may be empty: a token
that does not decode to text on its own, or a model without a tokenizer): TTFT is the time to
the first one, each inter-token latency (ITL) the gap between two. A server that sends fewer
chunks than tokens makes these per-chunk figures; `chunks` tells. A request fails on an HTTP
error, an `error` event, a broken stream, a timeout, or a token count other than asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from llmservice.runtime.bench.workloads import seed_words

# Characters of a failure's response body kept in its error message.
_ERROR_BODY_CHARS = 300


@dataclass(frozen=True, slots=True)
class RequestResult:
    """The timings of one streamed request (seconds, from the moment it was sent)."""

    ok: bool
    """Whether it streamed exactly the tokens asked for without an error."""
    error: str | None
    """Why it failed (None when ok)."""
    ttft_s: float | None
    """Time to the first token (None if none came)."""
    itl_s: tuple[float, ...]
    """Gaps between consecutive token chunks."""
    latency_s: float
    """Time to the end of the stream (or to the failure)."""
    output_tokens: int
    """Tokens received (the usage report's count when the server sends one)."""
    chunks: int
    """Token events received (chunks with a choice); equals output_tokens when streamed 1:1."""


@dataclass(frozen=True, slots=True)
class CompletionTarget:
    """Where and what to ask: the server's completions endpoint and the request's fixed fields."""

    base_url: str
    """The server's root, e.g. "http://127.0.0.1:8000"."""
    model: str
    """The served model name (the request's `model`)."""
    max_tokens: int
    """Output tokens of every request."""
    timeout_s: float
    """A request not finished after this many seconds fails."""
    api_key: str | None = None
    """Sent as a bearer token when set."""

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v1/completions"

    def body(self, prompt: list[int]) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def poisson_arrivals(num_requests: int, rate: float, seed: int, stream: str) -> list[float]:
    """Send times (seconds from the start) of `num_requests` Poisson arrivals at `rate`/s; the
    first request goes at once."""
    rng = np.random.default_rng(seed_words(seed, "W5-arrivals", stream))
    gaps = rng.exponential(1.0 / rate, size=num_requests)
    gaps[0] = 0.0
    return [float(t) for t in np.cumsum(gaps)]


async def stream_completion(
    session: aiohttp.ClientSession, target: CompletionTarget, prompt: list[int]
) -> RequestResult:
    """Send one streaming completion request and time its token chunks."""
    start = time.perf_counter()
    token_times: list[float] = []
    usage_tokens: int | None = None

    def failed(error: str) -> RequestResult:
        return _result(start, token_times, len(token_times), error)

    try:
        async with asyncio.timeout(target.timeout_s):
            async with session.post(
                target.url, json=target.body(prompt), headers=target.headers()
            ) as response:
                if response.status != 200:
                    body = (await response.text())[:_ERROR_BODY_CHARS]
                    return failed(f"HTTP {response.status}: {body}")
                async for raw in response.content:
                    line = raw.decode("utf-8").strip()
                    if not line.startswith("data:"):
                        continue  # blank separators, SSE comments, keep-alives
                    payload = line.removeprefix("data:").strip()
                    if payload == "[DONE]":
                        break
                    event = json.loads(payload)
                    if "error" in event:
                        return failed(
                            f"error event: {json.dumps(event['error'])[:_ERROR_BODY_CHARS]}"
                        )
                    if event.get("choices"):
                        token_times.append(time.perf_counter())
                    usage = event.get("usage")
                    if usage:
                        usage_tokens = int(usage["completion_tokens"])
    except TimeoutError:
        return failed(f"no complete response within {target.timeout_s:g} s")
    except (aiohttp.ClientError, ValueError, KeyError) as exc:
        return failed(f"{type(exc).__name__}: {exc}")
    output_tokens = usage_tokens if usage_tokens is not None else len(token_times)
    if output_tokens != target.max_tokens:
        return failed(f"received {output_tokens} tokens, expected {target.max_tokens}")
    return _result(start, token_times, output_tokens, None)


async def run_arrivals(
    session: aiohttp.ClientSession,
    target: CompletionTarget,
    prompts: list[list[int]],
    arrivals_s: list[float],
    on_done: Callable[[], None] = lambda: None,
) -> tuple[list[RequestResult], float]:
    """Send `prompts[i]` at `arrivals_s[i]` seconds from now, each concurrently with the others;
    the results in prompt order and the seconds from the first send to the last answer."""
    if len(prompts) != len(arrivals_s):
        raise ValueError(f"{len(prompts)} prompts but {len(arrivals_s)} arrival times")
    start = time.perf_counter()

    async def one(prompt: list[int], at_s: float) -> RequestResult:
        await asyncio.sleep(max(0.0, at_s - (time.perf_counter() - start)))
        result = await stream_completion(session, target, prompt)
        on_done()
        return result

    results = await asyncio.gather(*(one(p, t) for p, t in zip(prompts, arrivals_s, strict=True)))
    return list(results), time.perf_counter() - start


def _result(
    start: float, token_times: list[float], output_tokens: int, error: str | None
) -> RequestResult:
    end = time.perf_counter()
    return RequestResult(
        ok=error is None,
        error=error,
        ttft_s=token_times[0] - start if token_times else None,
        itl_s=tuple(float(b - a) for a, b in itertools.pairwise(token_times)),
        latency_s=end - start,
        output_tokens=output_tokens,
        chunks=len(token_times),
    )
