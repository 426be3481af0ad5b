"""Fixtures: the bigram checkpoint, and the shared server of the API and load tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers beside this file (server_harness, bigram_model) are imported by name.
sys.path.insert(0, str(Path(__file__).parent))

from bigram_model import write_tiny_model
from server_harness import API_KEY, ServerProcess, start_server


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bigram-machine checkpoint (see bigram_model.py)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def api_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server for the API and load tests: API key, qwen3 reasoning, a 256-token context."""
    server = start_server(
        tiny_model,
        tmp_path_factory.mktemp("api-server"),
        "--api-key", API_KEY,
        "--reasoning-parser", "qwen3",
        "--served-model-name", "tiny",
        "--max-model-len", "256",
        "--max-num-seqs", "64",
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log()[-4000:]
