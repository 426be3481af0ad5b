"""KV-cache write, RMSNorm, rotary and SiLU-and-multiply Triton kernels on the GPU at Llama-3.1-8B
sizes, against the reference (bf16 tolerances: one rounding of a float32 result, ~1e-2)."""

from __future__ import annotations

import pytest
import torch

from llmservice.kernels import ops, reference

pytestmark = pytest.mark.gpu
BF16 = {"rtol": 1.6e-2, "atol": 1e-2}


def test_write_kv_cache_gpu(cuda: torch.device) -> None:
    k_cache = torch.randn(2048, 16, 8, 128, dtype=torch.bfloat16, device=cuda)
    v_cache = torch.randn_like(k_cache)
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    key = torch.randn(8192, 8, 128, dtype=torch.bfloat16, device=cuda)
    value = torch.randn_like(key)
    slots = torch.randperm(2048 * 16, device=cuda)[:8192]
    slots[::7] = -1  # padding tokens

    ops.write_kv_cache(key, value, k_cache, v_cache, slots)
    reference.write_kv_cache(key, value, expected_k, expected_v, slots)

    torch.testing.assert_close(k_cache, expected_k, rtol=0, atol=0)
    torch.testing.assert_close(v_cache, expected_v, rtol=0, atol=0)


def test_rms_norm_and_fused_add_gpu(cuda: torch.device) -> None:
    x = torch.randn(4096, 4096, dtype=torch.bfloat16, device=cuda)
    residual = torch.randn_like(x)
    weight = torch.randn(4096, dtype=torch.bfloat16, device=cuda)

    fused, summed = ops.fused_add_rms_norm(x, residual, weight, 1e-5)
    expected_fused, expected_summed = reference.fused_add_rms_norm(x, residual, weight, 1e-5)

    torch.testing.assert_close(
        ops.rms_norm(x, weight, 1e-5), reference.rms_norm(x, weight, 1e-5), **BF16
    )
    torch.testing.assert_close(summed, expected_summed, rtol=0, atol=0)
    torch.testing.assert_close(fused, expected_fused, **BF16)


def test_rotary_embedding_gpu(cuda: torch.device) -> None:
    qkv = torch.randn(4096, 32 + 2 * 8, 128, dtype=torch.bfloat16, device=cuda)
    query, key = qkv[:, :32], qkv[:, 32:40]
    inv_freq = 500000.0 ** -(torch.arange(0, 128, 2, device=cuda).double() / 128)
    angles = torch.arange(8192, device=cuda).double()[:, None] * inv_freq[None, :]
    cos_sin_cache = torch.cat((angles.cos(), angles.sin()), dim=-1).float()
    positions = torch.randint(0, 8192, (4096,), device=cuda)

    q_out, k_out = ops.rotary_embedding(positions, query, key, cos_sin_cache)
    q_ref, k_ref = reference.rotary_embedding(positions, query, key, cos_sin_cache)

    torch.testing.assert_close(q_out, q_ref, **BF16)
    torch.testing.assert_close(k_out, k_ref, **BF16)


def test_fused_gate_up_gpu(cuda: torch.device) -> None:
    from llmservice.kernels import gated_linear

    # Llama-3.1-8B's gate/up at a prefill chunk's row count (not a multiple of the tile).
    x = torch.randn(1500, 4096, dtype=torch.bfloat16, device=cuda)
    weight = torch.randn(2 * 14336, 4096, dtype=torch.bfloat16, device=cuda) * 0.02
    bias = torch.zeros(2 * 14336, dtype=torch.bfloat16, device=cuda)
    assert ops.fuses_gated_linear(x, weight, None) == gated_linear.serves(x, weight, None)
    if torch.cuda.get_device_capability(cuda) >= (9, 0):
        assert ops.fuses_gated_linear(x, weight, None)
        assert not ops.fuses_gated_linear(x[: gated_linear.MIN_ROWS - 1], weight, None)
        assert not ops.fuses_gated_linear(x, weight, bias)

    out = ops.linear_silu_and_mul(x, weight, None)

    # The fused kernel rounds once (float32 product), the reference twice (after the GEMM too).
    expected = reference.silu_and_mul(x.float() @ weight.float().T).to(torch.bfloat16)
    torch.testing.assert_close(out, expected, **BF16)


def test_silu_and_mul_gpu(cuda: torch.device) -> None:
    x = torch.randn(4096, 2 * 14336, dtype=torch.bfloat16, device=cuda)
    torch.testing.assert_close(ops.silu_and_mul(x), reference.silu_and_mul(x), **BF16)
