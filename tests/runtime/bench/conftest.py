"""Shared fixtures of the benchmark tests: a tiny model folder, the CLI, a stub server.

Fixtures only (with pytest's importlib mode test modules cannot import each other). The stub is
a tiny OpenAI-compatible completions server for testing the serving benchmark's client: it
speaks the streaming format of `/v1/completions` (one SSE chunk per token, a usage chunk,
`data: [DONE]`), records every request body, and can be told to fail: answer HTTP 500 to every
`fail_every`-th request, stream `short_by` tokens fewer than asked, or stall before answering.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

MODEL_ID = "stub-model"
TINY_VOCAB = 256
# A Llama-architecture model small enough for the CPU; config only (load_format "dummy").
TINY_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": TINY_VOCAB,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "bos_token_id": 1,
    "eos_token_id": 2,
}


@dataclass(frozen=True)
class BenchRun:
    """What one `llmservice bench ...` process did."""

    returncode: int
    lines: list[dict[str, Any]]
    stderr: str


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A config-only tiny Llama folder (vocab 256)."""
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG))
    return folder


@pytest.fixture
def run_bench() -> Callable[..., BenchRun]:
    """Run the installed `llmservice bench` console script: `run("throughput --workload W1",
    *more_args)`; parse its stdout, which must hold nothing but JSON lines."""

    def run(command: str, *args: str, timeout: float = 300) -> BenchRun:
        exe = shutil.which("llmservice") or f"{sys.prefix}/bin/llmservice"
        argv = [exe, "bench", *shlex.split(command), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        return BenchRun(done.returncode, lines, done.stderr)

    return run


@pytest.fixture
def stub_server() -> Callable[..., AbstractContextManager[tuple[str, StubBehaviour]]]:
    """`with stub_server(fail_every=3) as (url, behaviour):` serves the stub for the block;
    keyword arguments set `StubBehaviour` fields, `behaviour.bodies` has what it received."""
    return running_stub


@dataclass
class StubBehaviour:
    """What the stub does with each request."""

    token_delay_s: float = 0.001
    fail_every: int = 0
    short_by: int = 0
    stall_from: int = 0  # requests from this one on (1-based) wait stall_s before streaming
    stall_s: float = 2.0
    one_chunk: bool = (
        False  # stream all tokens in one chunk (as a server without per-token flushes)
    )
    bodies: list[dict[str, Any]] = field(default_factory=list)


def _app(behaviour: StubBehaviour) -> web.Application:
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        behaviour.bodies.append(body)
        if behaviour.fail_every and len(behaviour.bodies) % behaviour.fail_every == 0:
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        if behaviour.stall_from and len(behaviour.bodies) >= behaviour.stall_from:
            await asyncio.sleep(behaviour.stall_s)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        count = body["max_tokens"] - behaviour.short_by
        for index in range(1 if behaviour.one_chunk else count):
            await asyncio.sleep(behaviour.token_delay_s)
            last = behaviour.one_chunk or index == count - 1
            chunk = {
                "object": "text_completion",
                "model": MODEL_ID,
                "choices": [
                    {"index": 0, "text": f" t{index}", "finish_reason": "length" if last else None}
                ],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": count}
        await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    return app


@contextmanager
def running_stub(**settings: Any) -> Iterator[tuple[str, StubBehaviour]]:
    """Serve the stub on a free local port in a background thread; yields its root URL."""
    behaviour = StubBehaviour(**settings)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(behaviour))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", behaviour
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
