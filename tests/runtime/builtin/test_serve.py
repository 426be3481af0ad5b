"""`llmservice serve` with no model serves the built-in one, reasoning split by `deepseek_r1`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmservice.runtime.builtin.arithmetic import parse_chain, solve
from llmservice.runtime.builtin.corpus import heldout_problems

pytestmark = pytest.mark.slow

_QUESTION = "What is 47 * 23?"
# the working the model was trained to write (its text is pinned in test_arithmetic.py)
_WORKING, _ = solve(parse_chain([47, 23], ["*"]))


def _post(url: str, body: dict[str, Any]) -> urllib.request.Request:
    return urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `llmservice serve --reasoning-parser deepseek_r1` (no MODEL) on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    command = [str(Path(sys.prefix) / "bin" / "llmservice"), "serve", "--device", "cpu"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--reasoning-parser", "deepseek_r1"]
    with log_path.open("wb") as log:
        # one thread: a tiny model gains nothing from more, and a busy CI machine loses a lot
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ready", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_the_default_model_is_the_builtin_one(server_url: str) -> None:
    with urllib.request.urlopen(f"{server_url}/v1/models", timeout=30) as response:
        models = json.loads(response.read())
    assert [m["id"] for m in models["data"]] == ["builtin:tiny-reasoner"]


def test_the_reply_is_split_into_reasoning_and_answer(server_url: str) -> None:
    body = {
        "messages": [{"role": "user", "content": _QUESTION}],
        "temperature": 0,
        "max_tokens": 400,
    }
    with urllib.request.urlopen(_post(f"{server_url}/v1/chat/completions", body), timeout=120) as r:
        message = json.loads(r.read())["choices"][0]["message"]
    assert message["reasoning_content"] == _WORKING
    assert message["content"] == "1081"


def test_a_stream_splits_the_same_way(server_url: str) -> None:
    problem = heldout_problems(1)[0]
    body = {
        "messages": [{"role": "user", "content": problem.question}],
        "temperature": 0,
        "max_tokens": 400,
        "stream": True,
    }
    reasoning, content = [], []
    with urllib.request.urlopen(_post(f"{server_url}/v1/chat/completions", body), timeout=120) as r:
        for line in r.read().decode().splitlines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[len("data: ") :])["choices"]:
                reasoning.append(choice["delta"].get("reasoning_content") or "")
                content.append(choice["delta"].get("content") or "")
    assert ("".join(reasoning), "".join(content)) == (problem.reasoning, problem.answer)
