"""The GEMV kernel against the reference in Triton's interpreter: one and two rows, tails in N
and K, bias, float32/float16/bfloat16, strided x, float32 output."""

from __future__ import annotations

import pytest
import torch

from llmservice.kernels import gemv, reference

# Small tiles so tiny shapes still take several programs and several K iterations.
SMALL = gemv.GemvConfig(block_n=4, block_k=16, num_warps=1, num_stages=1)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize("num_rows", [1, 2])
@pytest.mark.parametrize(
    ("n", "k", "with_bias"),
    [(8, 32, False), (10, 37, True), (7, 48, False), (12, 19, True)],  # even, both tails, N, K
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gemv_matches_reference(
    num_rows: int, n: int, k: int, with_bias: bool, dtype: torch.dtype
) -> None:
    x = torch.randn(num_rows, k, dtype=dtype)
    weight = torch.randn(n, k, dtype=dtype)
    bias = torch.randn(n, dtype=dtype) if with_bias else None
    out = torch.full((num_rows, n), float("nan"), dtype=dtype)  # every element must be written

    result = gemv.gemv(x, weight, bias, out, config=SMALL)

    assert result is out
    close = {"rtol": TOLERANCE[dtype], "atol": TOLERANCE[dtype] * k**0.5}
    torch.testing.assert_close(out, reference.gemv(x, weight, bias), **close)


def test_gemv_reads_strided_rows_and_writes_float32_logits() -> None:
    hidden = torch.randn(2, 40, dtype=torch.bfloat16)[:, :32]  # row stride 40
    weight = torch.randn(9, 32, dtype=torch.bfloat16)
    logits = torch.empty(2, 9, dtype=torch.float32)

    gemv.gemv(hidden, weight, out=logits, config=SMALL)

    expected = hidden.double() @ weight.double().T  # float32 accumulation, one rounding
    torch.testing.assert_close(logits, expected.float(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("num_rows", [1, 2])
def test_gemv_default_config_writes_only_its_rows(num_rows: int) -> None:
    x = torch.randn(num_rows, 64, dtype=torch.float16)
    weight = torch.randn(6, 64, dtype=torch.float16)
    out = torch.full((3, 6), 7.0, dtype=torch.float16)  # rows past num_rows: not the launch's

    gemv.gemv(x, weight, out=out[:num_rows])  # the generic config: one masked program

    expected = reference.gemv(x, weight)
    torch.testing.assert_close(out[:num_rows], expected, rtol=2e-3, atol=2e-2)
    assert bool((out[num_rows:] == 7.0).all())
