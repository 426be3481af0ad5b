"""Kernel-level benchmark of the attention and GEMV kernels at Llama-3.1-8B shapes (JSON lines).

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
gemv: the decode projections of Llama-3.1-8B (qkv, o, gate_up, down, lm_head) at 1-4 rows, the
Triton GEMV against cuBLAS (F.linear), each timed as one call among back-to-back calls replayed
from a CUDA graph over rotating weight copies (L2 is 50 MB), checked against a float64 product;
with `--sweep` every candidate launch config (compiled first in parallel worker processes); on
Hopper the table's config also with PDL switched off (kernels/bench_chain.py times a whole
decode step both ways; kernels/bench_gemv_chain.py sweeps the configs inside that step).
gated: Llama-3.1-8B's gate/up projection with the SiLU-and-multiply in its epilogue
(kernels/gated_linear.py) against cuBLAS's GEMM plus the SiLU kernel, at prefill row counts;
TFLOP/s counts the GEMM's 2*M*K*2d. Every timed configuration is first checked against the
reference. `--sweep` also times the
launch configurations tried for tuning (head_dim 128 and 64; cascade tiles). `--only NAME`
runs one group.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
import triton.testing

from llmservice.kernels import (
    cascade_attention,
    decode_attention,
    extend_attention,
    gated_linear,
    gemv,
    ops,
    reference,
)
from llmservice.kernels.bench_chain import pdl_switched
from llmservice.kernels.bench_gemv_chain import precompile_gemv
from llmservice.kernels.paged_batch import PagedBatch, make_paged_batch
from llmservice.kernels.triton_utils import use_pdl

HBM_GBS = 3000.0  # measured device-to-device copy on the H100 (KINDS.md)
PEAK_TFLOPS = 800.0  # measured bf16 matrix product on the H100 (KINDS.md)
NUM_HEADS, NUM_KV_HEADS, BLOCK_SIZE = 32, 8, 16

Config = (
    decode_attention.DecodeConfig
    | extend_attention.ExtendConfig
    | cascade_attention.CascadeConfig
    | gemv.GemvConfig
    | gated_linear.GatedLinearConfig
)
DECODE_SWEEP = [
    decode_attention.DecodeConfig(block_n=n, num_warps=w, num_stages=s, programs_per_sm=p)
    for n, w, s, p in [(64, 4, 3, 8), (32, 4, 3, 2)]
]  # fmt: skip
PREFILL_SWEEP = [
    extend_attention.ExtendConfig(block_m=m, block_n=n, num_warps=w, num_stages=s)
    for m, n, w, s in [
        (128, 128, 8, 3), (128, 64, 4, 3), (256, 64, 8, 4), (256, 64, 16, 3), (256, 32, 8, 4),
        (128, 64, 8, 3), (128, 128, 8, 2),
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
    # The runner's path: the new tokens' K/V passed along (TMA loads on Hopper)...
    with_new_kv = functools.partial(
        extend_attention.paged_attention, new_kv=(batch.key, batch.value)
    )
    bench_configs(name, batch, with_new_kv, configs, figures)
    # ...and every key gathered from the paged cache through the block table.
    from_cache = extend_attention.default_config(head_dim, device, 4096 * num_prompts, num_prompts)
    bench_configs(f"{name}, keys from the cache", batch, extend_attention.paged_attention,
                  [from_cache], figures)  # fmt: skip
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

    prefix = torch.tensor([prefix_blocks, 0], dtype=torch.int32, device=device)

    def cascade(*args: Any, config: cascade_attention.CascadeConfig) -> torch.Tensor:
        # args: the 7 attention arguments, then `out` when timed
        query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, *out = args
        return cascade_attention.cascade_attention(
            query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale,
            prefix, *out, config=config,
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


# --- gemv: decode-batch projections at Llama-3.1-8B shapes, Triton vs cuBLAS ---
GEMV_SHAPES = {
    "qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336),
    "lm_head": (128256, 4096),
}  # fmt: skip
L2_BYTES = 50 * 2**20
# (block_n, block_k, num_warps) per row count, weights evict-first and, for the first run's
# leaders, also with the default eviction policy.
GEMV_SWEEP = {
    1: [gemv.GemvConfig(n, k, w, evict_first=e) for n, k, w, e in [
        (2, 2048, 8, True), (4, 1024, 8, True), (4, 512, 4, True), (4, 2048, 8, True),
        (8, 1024, 8, True), (8, 512, 4, True), (16, 1024, 8, True), (16, 512, 4, True),
        (16, 512, 8, True), (32, 512, 8, True), (32, 256, 4, True), (4, 1024, 4, True),
        (8, 1024, 4, True), (8, 2048, 16, True), (4, 1024, 8, False), (8, 1024, 8, False),
        (16, 1024, 8, False), (2, 2048, 8, False), (4, 512, 4, False), (16, 512, 4, False),
        (32, 512, 8, False)]],
    2: [gemv.GemvConfig(n, k, w, evict_first=e) for n, k, w, e in [
        (2, 1024, 4, True), (4, 512, 4, True), (4, 1024, 8, True), (8, 512, 4, True),
        (8, 1024, 8, True), (16, 512, 8, True), (4, 1024, 4, True), (2, 2048, 8, True),
        (8, 512, 4, False), (2, 1024, 4, False), (16, 512, 8, False), (4, 512, 4, False)]],
}  # fmt: skip


def graph_ms_per_call(
    call: Callable[[torch.Tensor], object], weights: list[torch.Tensor], calls: int
) -> float:
    """Median time of one call among `calls` back-to-back calls replayed from a CUDA graph, the
    i-th on weights[i % len(weights)] (enough copies that none is still in L2 when reused)."""
    call(weights[0])
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            call(weights[i % len(weights)])
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    times: list[float] = []
    for _ in range(13):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times[3:])  # the first replays warm up


def bench_gemv_shape(
    name: str, n: int, k: int, device: torch.device, sweep: bool
) -> dict[int, tuple[float, float]]:
    """One shape at 1-4 rows: cuBLAS, the table's config and (sweep) every candidate, each
    checked against a float64 product first; returns rows -> (cuBLAS ms, fastest GEMV ms)."""
    nbytes = n * k * 2
    copies = max(2, -(-3 * L2_BYTES // nbytes))
    calls = copies * max(1, -(-4 * 10**9 // (nbytes * copies)))  # ~4 GB of weights per replay
    weights = [torch.randn(n, k, dtype=torch.bfloat16, device=device) for _ in range(copies)]
    fastest: dict[int, tuple[float, float]] = {}
    for rows in range(1, gemv.MAX_ROWS + 1):
        x = torch.randn(rows, k, dtype=torch.bfloat16, device=device)
        expected = x.double() @ weights[0].double().T
        cublas = graph_ms_per_call(functools.partial(F.linear, x), weights, calls)
        shape = {"rows": rows, "n": n, "k": k}
        report(f"cublas {name}", None, **shape, ms=cublas, gb_per_s=nbytes / cublas / 1e6)
        chosen = gemv.choose_config(rows, n, k)
        candidates = [chosen] if chosen else []
        candidates += GEMV_SWEEP[rows] if sweep else []
        best = cublas if not candidates else float("inf")
        for config in dict.fromkeys(candidates):
            out = gemv.gemv(x, weights[0], config=config).double()
            rel_error = float((out - expected).norm() / expected.norm())
            ms = graph_ms_per_call(functools.partial(gemv.gemv, x, config=config), weights, calls)
            best = min(best, ms)
            figures = {"ms": ms, "rel_error": rel_error, "gb_per_s": nbytes / ms / 1e6}
            report(f"gemv {name}", config, **shape, **figures, vs_cublas=cublas / ms,
                   table=config == chosen, pdl=use_pdl(device))  # fmt: skip
        if chosen and use_pdl(device):
            # The same chain without PDL: each call starts only after the previous drained.
            with pdl_switched(False):
                call = functools.partial(gemv.gemv, x, config=chosen)
                ms = graph_ms_per_call(call, weights, calls)
            report(f"gemv {name}", chosen, **shape, ms=ms, gb_per_s=nbytes / ms / 1e6,
                   vs_cublas=cublas / ms, table=True, pdl=False)  # fmt: skip
        fastest[rows] = (cublas, best)
    return fastest


def bench_gemv(device: torch.device, sweep: bool) -> None:
    """Every shape, then per batch size the decoder layer (qkv + o + gate_up + down) and
    lm_head sums: cuBLAS vs the fastest GEMV (sweep) or the table's choice, and the GPU time
    a 32-layer decode step would save (torch wherever cuBLAS is faster)."""
    if sweep:
        precompile_gemv([(rows, c) for rows, configs in GEMV_SWEEP.items() for c in configs])
    results = {
        name: bench_gemv_shape(name, n, k, device, sweep) for name, (n, k) in GEMV_SHAPES.items()
    }
    for rows in range(1, gemv.MAX_ROWS + 1):
        layer = [results[name][rows] for name in ("qkv", "o", "gate_up", "down")]
        layer_cublas, layer_best = sum(c for c, _ in layer), sum(min(c, g) for c, g in layer)
        head_cublas, head_gemv = results["lm_head"][rows]
        head_best = min(head_cublas, head_gemv)
        saved = 32 * (layer_cublas - layer_best) + head_cublas - head_best
        report("gemv summary", None, rows=rows, layer_cublas_ms=layer_cublas,
               layer_best_ms=layer_best, lm_head_cublas_ms=head_cublas, lm_head_best_ms=head_best,
               saved_ms_per_step_32_layers=saved, best_of="sweep" if sweep else "table")  # fmt: skip


GATED_ROWS = (16384, 8192, 5462, 2048, 1024, 512)
"""A whole W3 step, two and three MLP chunks of one, and the sizes around MIN_ROWS."""


def _cublas_then_silu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return ops.silu_and_mul(F.linear(x, weight))


def bench_gated(device: torch.device) -> None:
    hidden, inner = 4096, 14336
    weight = torch.randn(2 * inner, hidden, dtype=torch.bfloat16, device=device) * 0.02
    for rows in GATED_ROWS:
        x = torch.randn(rows, hidden, dtype=torch.bfloat16, device=device)
        expected = reference.silu_and_mul(x.float() @ weight.float().T)
        out = gated_linear.linear_silu_and_mul(x, weight)
        rel_error = float((out.float() - expected).norm() / expected.norm())
        fused_ms = time_ms(functools.partial(gated_linear.linear_silu_and_mul, x, weight))
        unfused_ms = time_ms(functools.partial(_cublas_then_silu, x, weight))
        flops = 2 * rows * hidden * 2 * inner
        report(
            "gated_linear", gated_linear.DEFAULT_CONFIG, rows=rows, ms=fused_ms,
            rel_error=rel_error, tflops=flops / fused_ms / 1e9, cublas_silu_ms=unfused_ms,
            speedup=unfused_ms / fused_ms,
        )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Kernel benchmark (JSON lines).")
    parser.add_argument("--sweep", action="store_true", help="also time the tuning configurations")
    parser.add_argument(
        "--only",
        choices=["decode", "prefill", "mixed", "cascade", "gemv", "gated"],
        help="run one group",
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
        prefill_configs = [extend_attention.default_config(head_dim, device, 4096, 1, tma=True)]
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
        four = extend_attention.default_config(128, device, 4 * 4096, 4, tma=True)
        bench_prefill(128, 4, device, [four])
    if wanted("mixed"):
        bench_mixed(device)
    if wanted("gemv"):
        bench_gemv(device, options.sweep)
    if wanted("gated"):
        bench_gated(device)
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
