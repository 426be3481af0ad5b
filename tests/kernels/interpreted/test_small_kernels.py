"""KV-cache write, RMSNorm, rotary and SiLU-and-multiply kernels against the reference, in
Triton's interpreter (float32 exact-ish, float16 within rounding)."""

from __future__ import annotations

import pytest
import torch

from llmservice.kernels import activation, kv_cache_write, reference, rms_norm, rotary


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_write_kv_cache_matches_reference_and_skips_padding(dtype: torch.dtype) -> None:
    k_cache, v_cache = torch.randn(5, 4, 3, 16, dtype=dtype), torch.randn(5, 4, 3, 16, dtype=dtype)
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    qkv = torch.randn(6, 9, 16, dtype=dtype)  # key/value as views of a fused projection
    key, value = qkv[:, 3:6], qkv[:, 6:9]
    slots = torch.tensor([19, -1, 4, 0, -1, 7])

    kv_cache_write.write_kv_cache(key, value, k_cache, v_cache, slots)
    reference.write_kv_cache(key, value, expected_k, expected_v, slots)

    torch.testing.assert_close(k_cache, expected_k, rtol=0, atol=0)
    torch.testing.assert_close(v_cache, expected_v, rtol=0, atol=0)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.float16, 1e-3)])
def test_rms_norm_and_fused_add_match_reference(dtype: torch.dtype, tolerance: float) -> None:
    x = torch.randn(3, 4, 96, dtype=dtype)  # hidden 96: not a power of two
    residual = torch.randn(3, 4, 96, dtype=dtype)
    weight = torch.randn(96, dtype=dtype)

    out = rms_norm.rms_norm(x, weight, 1e-5)
    fused, summed = rms_norm.fused_add_rms_norm(x, residual, weight, 1e-5)
    expected_fused, expected_summed = reference.fused_add_rms_norm(x, residual, weight, 1e-5)

    close = {"rtol": tolerance, "atol": tolerance}
    torch.testing.assert_close(out, reference.rms_norm(x, weight, 1e-5), **close)
    torch.testing.assert_close(summed, expected_summed, rtol=0, atol=0)
    torch.testing.assert_close(fused, expected_fused, **close)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.float16, 1e-3)])
def test_rotary_embedding_matches_reference(dtype: torch.dtype, tolerance: float) -> None:
    head_dim, num_heads, num_kv_heads = 32, 6, 2
    qkv = torch.randn(5, num_heads + 2 * num_kv_heads, head_dim, dtype=dtype)
    query, key = qkv[:, :num_heads], qkv[:, num_heads : num_heads + num_kv_heads]  # strided views
    angles = torch.arange(40.0)[:, None] * 0.1 ** torch.arange(head_dim // 2.0)[None, :]
    cos_sin_cache = torch.cat((angles.cos(), angles.sin()), dim=-1)
    positions = torch.tensor([0, 39, 3, 3, 17])

    q_out, k_out = rotary.rotary_embedding(positions, query, key, cos_sin_cache)
    q_ref, k_ref = reference.rotary_embedding(positions, query, key, cos_sin_cache)

    torch.testing.assert_close(q_out, q_ref, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(k_out, k_ref, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.float16, 1e-3)])
def test_silu_and_mul_matches_reference(dtype: torch.dtype, tolerance: float) -> None:
    x = torch.randn(2, 3, 2 * 1100, dtype=dtype)  # d = 1100 spans two column blocks
    out = activation.silu_and_mul(x)
    assert out.shape == (2, 3, 1100)
    torch.testing.assert_close(out, reference.silu_and_mul(x), rtol=tolerance, atol=tolerance)
