"""Kernel-level benchmark of the attention kernels at Llama-3.1-8B shapes; prints JSON lines.

    python -m llmservice.kernels.bench [--sweep]

decode: 64 (and 8) sequences x 4096 context, one new token each; achieved GB/s counts the K/V
bytes read (the floor of the problem) against the H100's measured ~3.0 TB/s.
prefill: 4096-token prompts (1 and 4 of them), causal; TFLOP/s counts the causal FLOPs
2*2*S*S*d*H/2 per prompt against the H100's measured ~800 bf16 TFLOP/s. torch's SDPA (flash)
on contiguous K/V of the same shapes is a peer figure.
mixed: a 2048-token prompt chunk plus 128 decodes over 1024-token contexts, in one launch of
the extend kernel (no target; for the record).
cascade: W4's decode step (500 sequences x (2048 shared + 129..256 own tokens)) by cascade
attention and by plain decode attention, and smaller batches where plain decode wins (they set
model_inputs.CascadePolicy's floor); GB/s counts the bytes each must read from HBM, which
plain decode beats on these batches: the shared blocks stay in L2 between its sequences.
Every timed configuration is first checked against the reference. `--sweep` also times the
launch configurations tried for tuning (head_dim 128 and 64; cascade tiles). `--only NAME`
runs one group.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
import triton.testing

from llmservice.kernels import cascade_attention, decode_attention, extend_attention, reference
from llmservice.kernels.paged_batch import PagedBatch, make_paged_batch

HBM_GBS = 3000.0  # measured device-to-device copy on the H100 (KINDS.md)
PEAK_TFLOPS = 800.0  # measured bf16 matrix product on the H100 (KINDS.md)
NUM_HEADS, NUM_KV_HEADS, BLOCK_SIZE = 32, 8, 16

Config = (
    decode_attention.DecodeConfig | extend_attention.ExtendConfig | cascade_attention.CascadeConfig
)
DECODE_SWEEP = [
    decode_attention.DecodeConfig(block_n=n, num_warps=w, num_stages=s, programs_per_sm=p)
    for n, w, s, p in [(64, 4, 3, 8), (32, 4, 3, 2)]
]  # fmt: skip
PREFILL_SWEEP = [
    extend_attention.ExtendConfig(block_m=m, block_n=n, num_warps=w, num_stages=s)
    for m, n, w, s in [
        (128, 128, 8, 3), (128, 64, 4, 3), (256, 64, 8, 4), (256, 64, 16, 3), (256, 128, 16, 2),
        (256, 32, 8, 4),
    ]
]  # fmt: skip


def time_ms(fn: Callable[[], object]) -> float:
    return float(triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median"))


def report(kernel: str, config: Config | None, **figures: object) -> None:
    line: dict[str, object] = {"kernel": kernel, "config": asdict(config) if config else None}
    line.update({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()})
    print(json.dumps(line), flush=True)


def llama_batch(
    seq_lens: list[int], query_lens: list[int], head_dim: int, device: torch.device
) -> PagedBatch:
    return make_paged_batch(
        seq_lens,
        query_lens,
        num_heads=NUM_HEADS,
        num_kv_heads=NUM_KV_HEADS,
        head_dim=head_dim,
        block_size=BLOCK_SIZE,
        dtype=torch.bfloat16,
        device=device,
        keep_dense=False,
    )


def bench_configs(
    name: str,
    batch: PagedBatch,
    kernel: Callable[..., torch.Tensor],
    configs: Sequence[Config],
    figures: Callable[[float], dict[str, float]],
) -> None:
    """Checks then times `kernel` under each config; `figures(ms)` adds the derived rates."""
    head_dim = batch.query.shape[2]
    args = batch.attention_args(head_dim**-0.5)
    expected = reference.paged_attention(*args)
    for config in configs:
        try:
            out = kernel(*args, config=config)
        except Exception as failure:  # e.g. a tile too large for shared memory: report, go on
            message = f"{type(failure).__name__}: {failure}"[:200]
            report(name, config, head_dim=head_dim, error=message)
            continue
        rel_error = float((out.double() - expected.double()).norm() / expected.double().norm())
        ms = time_ms(functools.partial(kernel, *args, out, config=config))
        report(name, config, head_dim=head_dim, ms=ms, rel_error=rel_error, **figures(ms))


def bench_decode(
    head_dim: int, num_seqs: int, device: torch.device, configs: Sequence[Config]
) -> None:
    batch = llama_batch([4096] * num_seqs, [1] * num_seqs, head_dim, device)
    kv_bytes = 2 * num_seqs * 4096 * NUM_KV_HEADS * head_dim * batch.k_cache.element_size()

    def figures(ms: float) -> dict[str, float]:
        gbs = kv_bytes / ms / 1e6
        return {"gb_per_s": gbs, "pct_of_3000_gbs": 100 * gbs / HBM_GBS}

    name = f"decode {num_seqs} x 4096"
    bench_configs(name, batch, decode_attention.paged_attention, configs, figures)


def bench_prefill(
    head_dim: int, num_prompts: int, device: torch.device, configs: Sequence[Config]
) -> None:
    batch = llama_batch([4096] * num_prompts, [4096] * num_prompts, head_dim, device)
    flops = num_prompts * 2 * 2 * 4096 * 4096 * head_dim * NUM_HEADS / 2

    def figures(ms: float) -> dict[str, float]:
        tflops = flops / ms / 1e9
        return {"tflops": tflops, "pct_of_800_tflops": 100 * tflops / PEAK_TFLOPS}

    name = f"prefill {num_prompts} x 4096 causal"
    bench_configs(name, batch, extend_attention.paged_attention, configs, figures)
    # Peer: torch's SDPA (FlashAttention) over contiguous K/V of the same shapes.
    q = batch.query.view(num_prompts, 4096, NUM_HEADS, head_dim).transpose(1, 2)
    k = torch.randn(num_prompts, NUM_KV_HEADS, 4096, head_dim, dtype=q.dtype, device=device)
    v = torch.randn_like(k)
    ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
    report(f"torch sdpa peer, {name}", None, head_dim=head_dim, ms=ms, **figures(ms))


def bench_mixed(device: torch.device) -> None:
    batch = llama_batch([2048] + [1024] * 128, [2048] + [1] * 128, 128, device)
    default = extend_attention.default_config(128, device, 2048 + 128, 1 + 128)
    bench_configs(
        "mixed 2048-token chunk + 128 decodes x 1024",
        batch,
        extend_attention.paged_attention,
        [default],
        lambda ms: {},
    )


CASCADE_SWEEP = [
    cascade_attention.CascadeConfig(tiles=extend_attention.ExtendConfig(m, n, w, s))
    for m, n, w, s in [(128, 64, 8, 3), (64, 128, 4, 3), (128, 128, 8, 2), (32, 64, 4, 3)]
]  # fmt: skip


def bench_cascade(
    num_seqs: int,
    prefix_tokens: int,
    own_tokens: tuple[int, int],
    device: torch.device,
    configs: Sequence[Config],
) -> None:
    """Sequences sharing `prefix_tokens` + own_tokens[0]..own_tokens[1] each: cascade vs plain."""
    low, high = own_tokens
    spread = [low + (high - low) * i // max(num_seqs - 1, 1) for i in range(num_seqs)]
    seq_lens = [prefix_tokens + own for own in spread]
    batch = llama_batch(seq_lens, [1] * num_seqs, 128, device)
    prefix_blocks = prefix_tokens // BLOCK_SIZE
    batch.block_tables[:, :prefix_blocks] = batch.block_tables[0, :prefix_blocks]
    token_bytes = 2 * NUM_KV_HEADS * 128 * batch.k_cache.element_size()  # K and V, one layer

    def figures(tokens_read: int) -> Callable[[float], dict[str, float]]:
        def rates(ms: float) -> dict[str, float]:
            gbs = tokens_read * token_bytes / ms / 1e6
            return {"gb_per_s": gbs, "pct_of_3000_gbs": 100 * gbs / HBM_GBS}

        return rates

    def cascade(*args: Any, config: cascade_attention.CascadeConfig) -> torch.Tensor:
        # args: the 7 attention arguments, then `out` when timed
        query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, *out = args
        return cascade_attention.cascade_attention(
            query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale,
            prefix_blocks, *out, config=config,
        )  # fmt: skip

    name = f"{num_seqs} x ({prefix_tokens} shared + {low}..{high} own)"
    own_total = sum(seq_lens) - num_seqs * prefix_tokens
    bench_configs(f"cascade {name}", batch, cascade, configs, figures(prefix_tokens + own_total))
    bench_configs(
        f"plain decode {name}",
        batch,
        decode_attention.paged_attention,
        [decode_attention.DecodeConfig()],
        figures(sum(seq_lens)),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Attention kernel benchmark (JSON lines).")
    parser.add_argument("--sweep", action="store_true", help="also time the tuning configurations")
    parser.add_argument(
        "--only", choices=["decode", "prefill", "mixed", "cascade"], help="run one group"
    )
    options = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("the kernel benchmark needs a CUDA device")
    device = torch.device("cuda")

    def wanted(group: str) -> bool:
        return options.only in (None, group)

    head_dims = (128, 64) if options.sweep else (128,)
    for head_dim in head_dims:
        decode_configs = [decode_attention.DecodeConfig()]
        prefill_configs = [extend_attention.default_config(head_dim, device, 4096, 1)]
        if options.sweep:
            decode_configs += DECODE_SWEEP
            prefill_configs += PREFILL_SWEEP
        if wanted("decode"):
            bench_decode(head_dim, 64, device, decode_configs)
        if wanted("prefill"):
            bench_prefill(head_dim, 1, device, prefill_configs)
    if wanted("decode"):
        bench_decode(128, 8, device, [decode_attention.DecodeConfig()])  # split-KV at work
    if wanted("prefill"):
        bench_prefill(128, 4, device, [extend_attention.default_config(128, device, 4 * 4096, 4)])
    if wanted("mixed"):
        bench_mixed(device)
    if wanted("cascade"):
        cascade_configs: list[Config] = [cascade_attention.default_config(device)]
        if options.sweep:
            cascade_configs += CASCADE_SWEEP
        bench_cascade(500, 2048, (129, 256), device, cascade_configs)  # W4's decode step
        default = cascade_configs[:1]
        # Below the policy's floor (128K shared-token reads saved per step):
        bench_cascade(17, 2048, (1, 128), device, default)
        bench_cascade(129, 256, (1, 128), device, default)
        bench_cascade(8, 256, (1, 128), device, default)


if __name__ == "__main__":
    main()
