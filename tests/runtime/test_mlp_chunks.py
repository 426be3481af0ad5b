"""The MLP runs long batches in chunks of rows (a lower activation peak) with the same result."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llmservice import LLM
from llmservice.runtime.models import layers


def added(mlp: layers.MLP, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The residual stream after the MLP of x, however the MLP adds its output (in its GEMM or
    left pending for the next norm); a zero residual by default, so the MLP's output itself."""
    residual = torch.zeros_like(x) if residual is None else residual.clone()
    pending, residual = mlp(x, residual)
    return residual if pending is None else residual + pending


def test_mlp_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    llm = LLM("builtin:tiny-reasoner", device="cpu", dtype="float32")
    mlp = llm.engine_core.model_runner.model.model.layers[0].mlp
    x = torch.randn(
        21, llm.engine_core.model_config.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    whole = added(mlp, x)  # 21 rows: one pass at the default chunk size
    monkeypatch.setattr(layers, "MLP_CHUNK_TOKENS", 8)
    chunked = added(mlp, x)  # three equal chunks: rows 0-6, 7-13, 14-20
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    assert not torch.equal(chunked[:7], chunked[7:14])  # rows really differ: no copy of one chunk


@pytest.mark.parametrize(("fused", "passes"), [(False, [7, 7, 7]), (True, [21])])
def test_mlp_chunks_only_when_the_gate_up_product_is_materialised(
    monkeypatch: pytest.MonkeyPatch, fused: bool, passes: list[int]
) -> None:
    # A kernel set whose gate/up GEMM never holds the 2 x d-wide product (the fused kernel on
    # Hopper) needs no chunks: the whole batch goes through at once, with the same result.
    from llmservice.runtime.kernel_ops import get_kernel_ops

    cpu = torch.device("cpu")
    ops = get_kernel_ops("reference", cpu)
    rows: list[int] = []

    def recording(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        rows.append(x.shape[0])
        return ops.linear_silu_and_mul(x, weight, bias)

    llm = LLM("builtin:tiny-reasoner", device="cpu", dtype="float32")
    mlp = llm.engine_core.model_runner.model.model.layers[0].mlp
    x = torch.randn(21, mlp.down_proj.weight.shape[0], generator=torch.Generator().manual_seed(3))
    expected = added(mlp, x)
    mlp.ops = dataclasses.replace(
        ops, linear_silu_and_mul=recording, fuses_gated_linear=lambda *args: fused
    )
    monkeypatch.setattr(layers, "MLP_CHUNK_TOKENS", 8)
    torch.testing.assert_close(added(mlp, x), expected, rtol=1e-5, atol=1e-6)
    assert rows == passes


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mlp_on_cuda_fuses_long_batches_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmservice.kernels import gated_linear

    llm = LLM("builtin:tiny-reasoner", device="cuda", dtype="bfloat16")
    mlp = llm.engine_core.model_runner.model.model.layers[0].mlp
    gen = torch.Generator(device="cuda").manual_seed(4)
    x = torch.randn(
        2000, mlp.down_proj.weight.shape[0], generator=gen, device="cuda", dtype=torch.bfloat16
    )
    hopper = torch.cuda.get_device_capability() >= (9, 0)
    assert mlp.ops.fuses_gated_linear(x, mlp.gate_up_proj.weight, None) == hopper
    fused = added(mlp, x)
    monkeypatch.setattr(gated_linear, "MIN_ROWS", 10**9)  # GEMM + SiLU kernel, in chunks
    monkeypatch.setattr(layers, "MLP_CHUNK_TOKENS", 512)
    torch.testing.assert_close(fused, added(mlp, x), rtol=2e-2, atol=2e-2)
