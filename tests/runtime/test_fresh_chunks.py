"""Long prefill chunks with no cached context go through `causal_attention` over their own K/V
(FlashAttention on CUDA): where prepare_host_inputs lays them out, what the reference computes,
and greedy tokens that do not change when the engine takes that path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from llmservice import LLM, SamplingParams
from llmservice.kernels import ops, reference
from llmservice.kernels.paged_batch import make_paged_batch
from llmservice.runtime import model_inputs
from llmservice.runtime.model_inputs import prepare_host_inputs
from llmservice.scheduler import Request, RequestLimits, ScheduledChunk

BS = 16


def _chunk(rid: str, computed: int, new: int) -> tuple[ScheduledChunk, Request]:
    prompt = list(range(3, 3 + computed + new + 5))
    blocks = tuple(range(1, -(-(computed + new) // BS) + 1))
    chunk = ScheduledChunk(rid, computed, new, blocks, computed + new == len(prompt))
    return chunk, Request(rid, prompt, RequestLimits(max_tokens=4), arrival_time=0.0)


def test_fresh_chunks_go_last_with_their_token_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_inputs, "FRESH_CHUNK_MIN_TOKENS", 8)
    pairs = [
        _chunk("fresh-a", 0, 20),
        _chunk("decode", 30, 1),
        _chunk("short", 0, 5),  # fresh but below the floor: the paged kernel's
        _chunk("cached", 16, 10),  # over cached context
        _chunk("fresh-b", 0, 8),
    ]
    host = prepare_host_inputs([c for c, _ in pairs], [r for _, r in pairs], BS)
    assert host.num_decodes == 1
    # decode, short, cached (chunk order kept), then the two fresh chunks
    assert host.query_start_loc.tolist() == [0, 1, 6, 16, 36, 44]
    assert host.fresh_spans == ((16, 36), (36, 44))
    assert host.to_device(torch.device("cpu")).attn_metadata.fresh_spans == host.fresh_spans
    monkeypatch.setattr(model_inputs, "FRESH_CHUNK_MIN_TOKENS", 1 << 30)
    host = prepare_host_inputs([c for c, _ in pairs], [r for _, r in pairs], BS)
    assert host.fresh_spans == ()


@pytest.mark.parametrize(("num_heads", "num_kv_heads"), [(4, 2), (4, 4)])
def test_reference_causal_attention_is_paged_attention_of_a_fresh_chunk(
    num_heads: int, num_kv_heads: int
) -> None:
    batch = make_paged_batch(
        [37], [37], num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=16, block_size=8,
        dtype=torch.float32,
    )  # fmt: skip
    args = batch.attention_args(0.3)
    blocks = batch.block_tables[0, :5].long()
    key = batch.k_cache[blocks].reshape(-1, num_kv_heads, 16)[:37]
    value = batch.v_cache[blocks].reshape(-1, num_kv_heads, 16)[:37]
    expected = reference.paged_attention(*args)
    torch.testing.assert_close(reference.causal_attention(batch.query, key, value, 0.3), expected)
    torch.testing.assert_close(ops.causal_attention(batch.query, key, value, 0.3), expected)


def test_causal_attention_rejects_mismatched_shapes() -> None:
    q = torch.zeros(5, 4, 16)
    with pytest.raises(ValueError, match="do not fit query"):
        reference.causal_attention(q, torch.zeros(6, 2, 16), torch.zeros(6, 2, 16), 1.0)
    with pytest.raises(ValueError, match="do not fit query"):
        reference.causal_attention(q, torch.zeros(5, 3, 16), torch.zeros(5, 3, 16), 1.0)
    with pytest.raises(ValueError, match="of one shape"):
        reference.causal_attention(q, torch.zeros(5, 2, 16), torch.zeros(5, 2, 8), 1.0)


def _generate(llm: LLM) -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    prompts: list[Any] = [
        {"prompt_token_ids": torch.randint(3, 300, (n,), generator=gen).tolist()}
        for n in (40, 90, 3, 64, 120)
    ]
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params)]


def test_greedy_tokens_do_not_change_with_the_fresh_path(
    make_llm: Callable[..., LLM], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = [0]
    original = reference.causal_attention

    def counted(*args: Any) -> torch.Tensor:
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(reference, "causal_attention", counted)
    # 64-token chunks: the longer prompts are cut into a fresh first chunk and cached-context
    # chunks, and the short ones stay on the paged path.
    # No prefix caching: the second run must compute the prompts again.
    llm = make_llm("llama", dtype="float32", max_num_batched_tokens=64, enable_prefix_caching=False)
    monkeypatch.setattr(model_inputs, "FRESH_CHUNK_MIN_TOKENS", 1 << 30)
    expected = _generate(llm)
    assert calls[0] == 0
    monkeypatch.setattr(model_inputs, "FRESH_CHUNK_MIN_TOKENS", 16)
    assert _generate(llm) == expected
    assert calls[0] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fresh_path_on_the_gpu(
    checkpoints: dict[str, tuple[Any, Any]], monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """float32: the same greedy tokens either way (the layout through the CUDA runner);
    bfloat16: FlashAttention serves the fresh chunks and every request completes."""
    calls = [0]
    original = ops.causal_attention

    def counted(*args: Any) -> torch.Tensor:
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(ops, "causal_attention", counted)  # before the engine picks its ops
    llm = LLM(
        str(checkpoints["llama"][0]), device="cuda", dtype=dtype, max_model_len=256,
        max_num_batched_tokens=64, enable_prefix_caching=False,
    )  # fmt: skip
    monkeypatch.setattr(model_inputs, "FRESH_CHUNK_MIN_TOKENS", 1 << 30)
    expected = _generate(llm)
    calls[0] = 0  # (the start-up profiling pass is one long fresh chunk)
    monkeypatch.setattr(model_inputs, "FRESH_CHUNK_MIN_TOKENS", 16)
    tokens = _generate(llm)
    assert calls[0] > 0
    if dtype == "float32":
        assert tokens == expected
    else:
        assert [len(t) for t in tokens] == [6] * 5
