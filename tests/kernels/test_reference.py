"""The torch reference kernels against plain, independent formulations (dense attention etc.)."""

from __future__ import annotations

import random

import pytest
import torch

from llmservice.kernels import reference
from llmservice.kernels.paged_batch import PagedBatch, make_paged_batch


def dense_attention(batch: PagedBatch, scale: float) -> torch.Tensor:
    """Attention over contiguous K/V with an explicit causal mask, in float64."""
    outs = []
    starts = batch.query_start_loc.tolist()
    for i, seq_len in enumerate(batch.seq_lens.tolist()):
        q = batch.query[starts[i] : starts[i + 1]].double()  # (q_len, H, D)
        group = q.shape[1] // batch.dense_keys[i].shape[1]
        k = batch.dense_keys[i].double().repeat_interleave(group, dim=1)  # (S, H, D)
        v = batch.dense_values[i].double().repeat_interleave(group, dim=1)
        q_len = q.shape[0]
        mask = torch.zeros(q_len, seq_len, dtype=torch.bool)
        for j in range(q_len):
            mask[j, : seq_len - q_len + j + 1] = True
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale
        probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        outs.append(torch.einsum("hqk,khd->qhd", probs, v))
    return torch.cat(outs)


def run_reference(batch: PagedBatch, scale: float) -> torch.Tensor:
    return reference.paged_attention(*batch.attention_args(scale))  # writes the new K/V first


def random_lengths(rng: random.Random, kind: str, num_seqs: int) -> tuple[list[int], list[int]]:
    seq_lens = [rng.randint(1, 90) for _ in range(num_seqs)]
    if kind == "decode":
        return seq_lens, [1] * num_seqs
    if kind == "prefill":
        return seq_lens, seq_lens
    if kind == "chunked":  # new chunks over cached prefixes
        return seq_lens, [rng.randint(1, s) for s in seq_lens]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["decode", "prefill", "chunked"])
@pytest.mark.parametrize(("num_heads", "num_kv_heads"), [(4, 4), (8, 2), (6, 1)])
@pytest.mark.parametrize("block_size", [4, 16])
def test_paged_attention_matches_dense_attention(
    kind: str, num_heads: int, num_kv_heads: int, block_size: int
) -> None:
    rng = random.Random(f"{kind}-{num_heads}-{num_kv_heads}-{block_size}")
    seq_lens, query_lens = random_lengths(rng, kind, num_seqs=rng.randint(1, 5))
    batch = make_paged_batch(
        seq_lens,
        query_lens,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=32,
        block_size=block_size,
        dtype=torch.float32,
        seed=rng.randint(0, 1000),
        extra_table_columns=2,
    )
    out = run_reference(batch, scale=0.17)
    torch.testing.assert_close(out.double(), dense_attention(batch, 0.17), atol=1e-5, rtol=1e-5)


def test_paged_attention_mixed_batch_in_low_precision() -> None:
    batch = make_paged_batch(
        [37, 1, 64, 20],
        [1, 1, 13, 20],
        num_heads=8,
        num_kv_heads=2,
        head_dim=64,
        block_size=16,
        dtype=torch.bfloat16,
    )
    out = run_reference(batch, scale=64**-0.5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), dense_attention(batch, 64**-0.5), atol=2e-2, rtol=2e-2)


def test_paged_attention_fills_and_returns_out() -> None:
    batch = make_paged_batch(
        [9, 5], [3, 5], num_heads=2, num_kv_heads=1, head_dim=16, block_size=4, dtype=torch.float32
    )
    out = batch.poisoned_out()
    result = reference.paged_attention(*batch.attention_args(0.25), out=out)
    assert result is out
    assert not out.isnan().any()


def test_paged_attention_rejects_heads_not_a_multiple_of_kv_heads() -> None:
    batch = make_paged_batch(
        [4], [4], num_heads=3, num_kv_heads=2, head_dim=8, block_size=4, dtype=torch.float32
    )
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        run_reference(batch, scale=1.0)


def test_write_kv_cache_skips_padding_slots_and_touches_nothing_else() -> None:
    k_cache = torch.randn(4, 4, 2, 8)
    v_cache = torch.randn(4, 4, 2, 8)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    key, value = torch.randn(4, 2, 8), torch.randn(4, 2, 8)
    slots = torch.tensor([5, -1, 15, -1])  # block 1 offset 1, padding, block 3 offset 3, padding

    reference.write_kv_cache(key, value, k_cache, v_cache, slots)

    expected_k, expected_v = before_k.clone(), before_v.clone()
    expected_k[1, 1], expected_v[1, 1] = key[0], value[0]
    expected_k[3, 3], expected_v[3, 3] = key[2], value[2]
    # NOTE: a -1 used as an index would land in the last slot (3, 3); it must not.
    torch.testing.assert_close(k_cache, expected_k, rtol=0, atol=0)
    torch.testing.assert_close(v_cache, expected_v, rtol=0, atol=0)


def test_write_kv_cache_into_a_view_of_the_stacked_cache() -> None:
    kv_cache = torch.zeros(2, 3, 4, 1, 8)
    key, value = torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    reference.write_kv_cache(key, value, kv_cache[0], kv_cache[1], torch.tensor([4, 11]))
    torch.testing.assert_close(kv_cache[0, 1, 0], key[0])
    torch.testing.assert_close(kv_cache[1, 2, 3], value[1])


def test_rms_norm_and_fused_residual_add() -> None:
    x, residual, weight = torch.randn(5, 64), torch.randn(5, 64), torch.randn(64)
    summed = (x + residual).double()
    expected = summed / summed.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * weight.double()

    normed, new_residual = reference.fused_add_rms_norm(x, residual, weight, 1e-6)

    torch.testing.assert_close(new_residual, x + residual)
    torch.testing.assert_close(normed.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reference.rms_norm(x + residual, weight, 1e-6), normed)


def hf_cos_sin_cache(head_dim: int, max_positions: int, theta: float) -> torch.Tensor:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).double() / head_dim)
    angles = torch.arange(max_positions).double()[:, None] * inv_freq[None, :]
    return torch.cat((angles.cos(), angles.sin()), dim=-1).float()


def test_rotary_embedding_matches_hf_rotate_half() -> None:
    head_dim, cache = 16, hf_cos_sin_cache(16, 64, 10000.0)
    positions = torch.tensor([0, 7, 63, 7])
    query, key = torch.randn(4, 3, head_dim), torch.randn(4, 1, head_dim)

    rq, rk = reference.rotary_embedding(positions, query, key, cache)

    # HF's apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, with cos/sin duplicated.
    cos = cache[positions, : head_dim // 2].repeat(1, 2)[:, None, :]
    sin = cache[positions, head_dim // 2 :].repeat(1, 2)[:, None, :]

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        return torch.cat((-x[..., head_dim // 2 :], x[..., : head_dim // 2]), dim=-1)

    torch.testing.assert_close(rq, query * cos + rotate_half(query) * sin)
    torch.testing.assert_close(rk, key * cos + rotate_half(key) * sin)
    torch.testing.assert_close(rq[0], query[0])  # position 0 is the identity


def test_rotary_scores_depend_only_on_relative_position() -> None:
    cache = hf_cos_sin_cache(32, 128, 500000.0)
    q, k = torch.randn(1, 1, 32), torch.randn(1, 1, 32)

    def score(q_pos: int, k_pos: int) -> float:
        rq, _ = reference.rotary_embedding(torch.tensor([q_pos]), q, k, cache)
        _, rk = reference.rotary_embedding(torch.tensor([k_pos]), q, k, cache)
        return float((rq * rk).sum())

    assert score(10, 3) == pytest.approx(score(100, 93), rel=1e-4, abs=1e-4)


def test_linear_silu_and_mul_is_the_gate_up_half_of_swiglu() -> None:
    x, weight, bias = torch.randn(5, 6), torch.randn(8, 6), torch.randn(8)
    out = reference.linear_silu_and_mul(x, weight, bias)
    gate, up = x @ weight[:4].T + bias[:4], x @ weight[4:].T + bias[4:]
    torch.testing.assert_close(out, torch.nn.functional.silu(gate) * up)
    assert not reference.fuses_gated_linear(x, weight, bias)
    with pytest.raises(ValueError, match="even count"):
        reference.linear_silu_and_mul(x, torch.randn(7, 6))
    with pytest.raises(ValueError, match="bias"):
        reference.linear_silu_and_mul(x, weight, torch.randn(6))


def test_silu_and_mul() -> None:
    x = torch.randn(3, 2, 10)
    out = reference.silu_and_mul(x)
    gate, up = x[..., :5], x[..., 5:]
    torch.testing.assert_close(out, gate * torch.sigmoid(gate) * up)
    with pytest.raises(ValueError, match="even"):
        reference.silu_and_mul(torch.randn(2, 3))
