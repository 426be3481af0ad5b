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


def test_linear_writes_into_given_rows_with_its_bias() -> None:
    from llmservice.runtime.kernel_ops import get_kernel_ops

    gen = torch.Generator().manual_seed(1)
    cpu = torch.device("cpu")
    linear = layers.Linear(6, 4, True, get_kernel_ops("reference", cpu), torch.float32, cpu)
    linear.weight.copy_(torch.randn(4, 6, generator=gen))
    assert linear.bias is not None
    linear.bias.copy_(torch.randn(4, generator=gen))
    x = torch.randn(5, 6, generator=gen)
    out = torch.full((9, 4), float("nan"))
    linear(x, out[2:7])
    torch.testing.assert_close(out[2:7], torch.nn.functional.linear(x, linear.weight, linear.bias))
    assert out[:2].isnan().all() and out[7:].isnan().all()  # other rows untouched
