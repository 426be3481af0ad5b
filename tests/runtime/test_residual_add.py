"""A sublayer's output joins the residual stream either inside its last GEMM (`linear_add_`, long
CUDA batches) or through the next norm's fused add; both give the same stream and tokens."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from llmservice import LLM, SamplingParams
from llmservice.kernels import ops, reference
from llmservice.runtime.kernel_ops import KernelOps, get_kernel_ops
from llmservice.runtime.models import layers

CPU = torch.device("cpu")


def test_reference_linear_add_updates_the_residual_in_place() -> None:
    gen = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*s, generator=gen) for s in ((5, 6), (4, 6), (4,)))
    residual = torch.randn(5, 4, generator=gen)
    expected = residual + x @ weight.T + bias
    out = reference.linear_add_(x, weight, bias, residual)
    assert out is residual
    torch.testing.assert_close(residual, expected)
    assert not reference.fuses_residual_add(x, weight, bias)
    with pytest.raises(ValueError, match="does not match"):
        reference.linear_add_(x, weight, None, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="does not match"):
        reference.linear_add_(x, weight, None, torch.zeros(5, 4, dtype=torch.float64))


def test_triton_set_leaves_cpu_tensors_to_the_reference_add() -> None:
    weight = torch.zeros(4, 6)
    rows = torch.zeros(ops.RESIDUAL_ADD_MIN_ROWS, 6)
    assert not ops.fuses_residual_add(rows, weight, None)  # a CPU tensor: the reference path
    residual = torch.ones(ops.RESIDUAL_ADD_MIN_ROWS, 4)
    assert ops.linear_add_(rows + 1, weight + 1, None, residual) is residual
    assert residual.eq(7).all()  # 1 + six products of 1 x 1


def _with(ops_set: KernelOps, module: torch.nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "ops"):
            m.ops = ops_set


def _adds_in_gemm(calls: list[int]) -> KernelOps:
    """The reference set, told to add inside the GEMM (recording the rows of each call)."""
    base = get_kernel_ops("reference", CPU)

    def linear_add_(x: Any, weight: Any, bias: Any, residual: Any) -> torch.Tensor:
        calls.append(x.shape[0])
        return base.linear_add_(x, weight, bias, residual)

    return dataclasses.replace(base, linear_add_=linear_add_, fuses_residual_add=lambda *a: True)


def test_linear_add_to_gives_the_same_stream_either_way() -> None:
    gen = torch.Generator().manual_seed(1)
    linear = layers.Linear(6, 4, False, get_kernel_ops("reference", CPU), torch.float32, CPU)
    linear.weight.copy_(torch.randn(4, 6, generator=gen))
    x, residual = torch.randn(5, 6, generator=gen), torch.randn(5, 4, generator=gen)
    pending, same = linear.add_to(x, residual.clone())
    assert pending is not None  # left to the next norm's fused add
    expected = same + pending
    calls: list[int] = []
    linear.ops = _adds_in_gemm(calls)
    stream = residual.clone()
    pending, out = linear.add_to(x, stream)
    assert pending is None and out is stream and calls == [5]
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("chunk", [None, 8])
def test_model_generates_the_same_tokens_with_the_add_in_the_gemm(
    monkeypatch: pytest.MonkeyPatch, chunk: int | None
) -> None:
    # chunk: the MLP in chunks of rows (a kernel set without the fused gate/up GEMM), each
    # chunk's down projection adding into its rows of the residual.
    if chunk is not None:
        monkeypatch.setattr(layers, "MLP_CHUNK_TOKENS", chunk)
    llm = LLM("builtin:tiny-reasoner", device="cpu", dtype="float32")
    prompts: list[Any] = [
        {
            "prompt_token_ids": torch.randint(
                3, 200, (n,), generator=torch.Generator().manual_seed(n)
            ).tolist()
        }
        for n in (21, 5, 40)
    ]
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)

    def tokens() -> list[list[int]]:
        return [list(out.outputs[0].token_ids) for out in llm.generate(prompts, params)]

    expected = tokens()
    calls: list[int] = []
    _with(_adds_in_gemm(calls), llm.engine_core.model_runner.model)
    assert tokens() == expected
    num_layers = llm.engine_core.model_config.num_layers
    # Every layer's o_proj and down_proj (each chunk of it) added inside the "GEMM".
    assert len(calls) >= 2 * num_layers
    if chunk is not None:
        assert any(rows <= chunk for rows in calls)
