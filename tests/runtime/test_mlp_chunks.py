"""The MLP runs long batches in chunks of rows (a lower activation peak) with the same result."""

from __future__ import annotations

import pytest
import torch

from llmservice import LLM
from llmservice.runtime.models import layers


def test_mlp_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    llm = LLM("builtin:tiny-reasoner", device="cpu", dtype="float32")
    mlp = llm.engine_core.model_runner.model.model.layers[0].mlp
    x = torch.randn(
        21, llm.engine_core.model_config.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    whole = mlp(x)  # 21 rows: one pass at the default chunk size
    monkeypatch.setattr(layers, "MLP_CHUNK_TOKENS", 8)
    chunked = mlp(x)  # three equal chunks: rows 0-6, 7-13, 14-20
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    assert not torch.equal(chunked[:7], chunked[7:14])  # rows really differ: no copy of one chunk
