"""The gate/up GEMM with the SiLU-and-multiply epilogue against the reference, in Triton's
interpreter (TMA descriptors included), on shapes whose every edge is ragged."""

from __future__ import annotations

import pytest
import torch

from llmservice.kernels import gated_linear, reference

# Tiles of 16 rows x (16 gate + 16 up) columns: 40 rows and d = 20 or 24 leave partial tiles on
# both edges, and 3 x 2 tiles over the interpreter's 4 programs make some walk the persistent
# loop twice.
TINY = gated_linear.GatedLinearConfig(
    block_m=16, block_n=32, block_k=16, group_m=2, num_warps=4, num_stages=1
)


@pytest.mark.parametrize(
    ("dtype", "d", "tolerance"), [(torch.float32, 20, 1e-4), (torch.float16, 24, 2e-3)]
)
def test_fused_gate_up_matches_reference(dtype: torch.dtype, d: int, tolerance: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 48, generator=gen).to(dtype)
    weight = (torch.randn(2 * d, 48, generator=gen) * 0.2).to(dtype)

    out = gated_linear.linear_silu_and_mul(x, weight, TINY)

    expected = reference.linear_silu_and_mul(x.float(), weight.float()).to(dtype)
    assert out.shape == (40, d) and out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=tolerance, atol=tolerance)


def test_gate_and_up_rows_are_not_swapped() -> None:
    # silu(g) * u is not symmetric in g and u: a kernel that read the halves the other way
    # round, or paired gate block j with another up block, fails here.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 32, generator=gen)
    gate, up = torch.randn(24, 32, generator=gen), torch.randn(24, 32, generator=gen) * 3

    out = gated_linear.linear_silu_and_mul(x, torch.cat((gate, up)), TINY)

    torch.testing.assert_close(
        out, torch.nn.functional.silu(x @ gate.T) * (x @ up.T), rtol=1e-4, atol=1e-4
    )
    swapped = torch.nn.functional.silu(x @ up.T) * (x @ gate.T)
    assert not torch.allclose(out, swapped, rtol=1e-2, atol=1e-2)


def test_reads_rows_of_a_wider_tensor() -> None:
    # The MLP may hand over a slice of rows; a column slice keeps a row stride wider than K.
    gen = torch.Generator().manual_seed(2)
    wide = torch.randn(33, 64, generator=gen)
    x = wide[:, :48]
    weight = torch.randn(2 * 16, 48, generator=gen) * 0.2

    out = gated_linear.linear_silu_and_mul(x, weight, TINY)

    torch.testing.assert_close(out, reference.linear_silu_and_mul(x, weight), rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_refused() -> None:
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="even count"):
        gated_linear.linear_silu_and_mul(x, torch.randn(5, 8), TINY)
    with pytest.raises(ValueError, match="weight"):
        gated_linear.linear_silu_and_mul(x, torch.randn(6, 7), TINY)
    with pytest.raises(ValueError, match="16-byte"):  # d = 3 float32 values: 12-byte rows
        gated_linear.linear_silu_and_mul(x, torch.randn(6, 8), TINY)
