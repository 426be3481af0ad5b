"""Kernel-level benchmark of the attention kernels at Llama-3.1-8B shapes; prints JSON lines.

    python -m llmservice.kernels.bench [--sweep]

decode: 64 sequences x 4096 context, one new token each; achieved GB/s counts the K/V bytes
read (the floor of the problem) against the H100's measured ~3.0 TB/s.
prefill: one 4096-token prompt, causal; TFLOP/s counts the causal FLOPs 2*2*S*S*d*H/2 against
the H100's measured ~800 bf16 TFLOP/s. torch's SDPA (flash) on contiguous K/V is a peer figure.
Each timed configuration is first checked against the reference. `--sweep` times the launch
configurations tried for tuning as well as the defaults.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch
import torch.nn.functional as F
import triton.testing

from llmservice.kernels import decode_attention, extend_attention, reference
from llmservice.kernels.paged_batch import PagedBatch, make_paged_batch

HBM_GBS = 3000.0  # measured device-to-device copy on the H100 (KINDS.md)
PEAK_TFLOPS = 800.0  # measured bf16 matrix product on the H100 (KINDS.md)
NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 8, 128, 16

DECODE_SWEEP = [
    decode_attention.DecodeConfig(block_n=n, num_warps=w, num_stages=s, programs_per_sm=p)
    for n, w, s, p in [
        (32, 4, 3, 8), (64, 4, 2, 8), (64, 4, 4, 8), (64, 4, 3, 4), (64, 4, 3, 16),
        (64, 8, 3, 8), (128, 4, 3, 8), (128, 8, 3, 8), (64, 4, 3, 32), (128, 4, 2, 16),
    ]
]  # fmt: skip
PREFILL_SWEEP = [
    extend_attention.ExtendConfig(block_m=m, block_n=n, num_warps=w, num_stages=s)
    for m, n, w, s in [
        (128, 128, 8, 3), (128, 64, 4, 3), (128, 32, 4, 4), (64, 64, 4, 3), (128, 64, 8, 4),
        (128, 128, 8, 2), (64, 128, 4, 3), (128, 64, 8, 2), (256, 64, 8, 3), (128, 128, 4, 3),
    ]
]  # fmt: skip


def relative_error(out: torch.Tensor, expected: torch.Tensor) -> float:
    return float((out.double() - expected.double()).norm() / expected.double().norm())


def time_ms(fn: Callable[[], object]) -> float:
    return float(triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median"))


def bench_decode(batch: PagedBatch, configs: Sequence[decode_attention.DecodeConfig]) -> None:
    args = batch.attention_args(HEAD_DIM**-0.5)
    expected = reference.paged_attention(*args)
    kv_bytes = (
        2 * int(batch.seq_lens.sum()) * NUM_KV_HEADS * HEAD_DIM * batch.k_cache.element_size()
    )
    for config in configs:
        out = decode_attention.paged_attention(*args, config=config)
        ms = time_ms(functools.partial(decode_attention.paged_attention, *args, out, config=config))
        gbs = kv_bytes / ms / 1e6
        report(
            "decode_attention",
            config,
            batch="64 x 4096 context, 32/8 heads, d128, bf16, block 16",
            ms=ms,
            gb_per_s=gbs,
            pct_of_3000_gbs=100 * gbs / HBM_GBS,
            rel_error=relative_error(out, expected),
        )


def bench_prefill(batch: PagedBatch, configs: Sequence[extend_attention.ExtendConfig]) -> None:
    args = batch.attention_args(HEAD_DIM**-0.5)
    expected = reference.paged_attention(*args)
    seq = int(batch.seq_lens[0])
    flops = 2 * 2 * seq * seq * HEAD_DIM * NUM_HEADS / 2
    for config in configs:
        out = extend_attention.paged_attention(*args, config=config)
        ms = time_ms(functools.partial(extend_attention.paged_attention, *args, out, config=config))
        tflops = flops / ms / 1e9
        report(
            "extend_attention",
            config,
            batch="1 x 4096 prompt, causal, 32/8 heads, d128, bf16, block 16",
            ms=ms,
            tflops=tflops,
            pct_of_800_tflops=100 * tflops / PEAK_TFLOPS,
            rel_error=relative_error(out, expected),
        )
    # Peer: torch's SDPA (FlashAttention) over contiguous K/V of the same shapes.
    q = batch.query.transpose(0, 1)[None]  # (1, heads, seq, head_dim)
    k = torch.randn(1, NUM_KV_HEADS, seq, HEAD_DIM, dtype=q.dtype, device=q.device)
    v = torch.randn_like(k)
    ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
    report("torch_sdpa_causal_peer", None, ms=ms, tflops=flops / ms / 1e9)


def report(
    kernel: str,
    config: decode_attention.DecodeConfig | extend_attention.ExtendConfig | None,
    **figures: object,
) -> None:
    line: dict[str, object] = {"kernel": kernel, "config": asdict(config) if config else None}
    line.update({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()})
    print(json.dumps(line), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--sweep", action="store_true", help="also time the tuning configurations")
    options = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("the kernel benchmark needs a CUDA device")
    device = torch.device("cuda")
    decode = llama_batch([4096] * 64, [1] * 64, device)
    bench_decode(
        decode, [decode_attention.DecodeConfig()] + (DECODE_SWEEP if options.sweep else [])
    )
    del decode
    prefill = llama_batch([4096], [4096], device)
    default = extend_attention.default_config(HEAD_DIM, device)
    bench_prefill(prefill, [default] + (PREFILL_SWEEP if options.sweep else []))


def llama_batch(seq_lens: list[int], query_lens: list[int], device: torch.device) -> PagedBatch:
    return make_paged_batch(
        seq_lens,
        query_lens,
        num_heads=NUM_HEADS,
        num_kv_heads=NUM_KV_HEADS,
        head_dim=HEAD_DIM,
        block_size=BLOCK_SIZE,
        dtype=torch.bfloat16,
        device=device,
        keep_dense=False,
    )


if __name__ == "__main__":
    main()
