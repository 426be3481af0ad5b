"""The GEMV launch table re-tuned where it counts: inside the batch-1 decode step's kernel chain
(kernels/bench_chain.py, with its output head), replayed from a CUDA graph, PDL on. JSON lines.

    python -m llmservice.kernels.bench_gemv_chain [--layers 32] [--context 384] [--rounds 5]

Timed alone (kernels/bench.py --only gemv --sweep) a config shows its own duration; in the chain,
with programmatic dependent launch, a GEMV's programs start while the kernel before it drains
and its tail overlaps the next kernel, so the config that finishes one call first need not
finish the step first. For each projection of the step (qkv, o, gate_up, down, lm_head; one
row) every candidate config is checked against a float64 product, then the whole chain is
captured with that projection on the candidate (the others on the table's) and timed; the
table's config and the fastest candidates are timed again, interleaved. A projection takes its
fastest candidate only where that beats the table's config by more than the table config's own
spread. Last, the chain with the current table and with the chosen configs, captured `--rounds`
times each, interleaved; the last line holds both medians, their spreads and the chosen configs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict

import torch

from llmservice.kernels import gemv
from llmservice.kernels.bench_chain import ChainShape, DecodeChain, llama_chain, replay_ms
from llmservice.kernels.triton_utils import use_pdl

GemvKey = tuple[int, int, int]
"""(rows, n, k): a projection's entry in gemv's table."""
SWEEP = [
    gemv.GemvConfig(n, k, w, evict_first=e)
    for n in (4, 8, 16, 32)
    for k in (512, 1024, 2048)
    for w in (4, 8)
    for e in (True, False)
    if n * k <= 64 * 32 * w  # at most 64 weight elements per thread: larger tiles spill
]  # fmt: skip
FINALISTS = 3
"""The fastest candidates of the first pass that are timed again."""
REPEATS = 2
"""Further timings of each finalist (and of the table's config)."""
MAX_REL_ERROR = 1e-2  # bf16 operands, float32 accumulation (METHOD.md)


def chain_projections(shape: ChainShape) -> dict[str, tuple[int, int]]:
    """The decode step's projections: name -> (n, k) of the weight."""
    h = shape.hidden
    return {
        "qkv": (shape.q_size + 2 * shape.kv_size, h), "o": (h, shape.q_size),
        "gate_up": (2 * shape.intermediate, h), "down": (h, shape.intermediate),
        "lm_head": (shape.vocab, h),
    }  # fmt: skip


@contextlib.contextmanager
def gemv_table(overrides: Mapping[GemvKey, gemv.GemvConfig]) -> Iterator[None]:
    """GEMV calls of these (rows, n, k) launch with these configs inside the block (a CUDA graph
    captured inside keeps them); the table is restored on the way out."""
    # NOTE: benchmark only. gemv.gemv reads its table at every call, so overriding the table
    # needs no config parameter threaded through ops.linear and the model's layers.
    saved = dict(gemv._TUNED)
    gemv._TUNED.update(overrides)
    try:
        yield
    finally:
        gemv._TUNED.clear()
        gemv._TUNED.update(saved)


def _compile_gemv(item: tuple[int, gemv.GemvConfig]) -> None:
    """Runs one GEMV variant once (in a worker process: fills Triton's on-disk cache)."""
    rows, config = item
    x = torch.randn(rows, 4096, dtype=torch.bfloat16, device="cuda")
    gemv.gemv(x, torch.randn(4096, 4096, dtype=x.dtype, device=x.device), config=config)
    torch.cuda.synchronize()


def precompile_gemv(items: list[tuple[int, gemv.GemvConfig]]) -> None:
    """Compiles the variants in parallel processes; the timing process then loads them from the
    cache (one at a time, compiling them would take most of a minute). Every Llama-3.1-8B shape
    divides these tiles, so the 4096 x 4096 variant is the one each shape launches."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(16, os.cpu_count() or 1)) as pool:
        pool.map(_compile_gemv, items)


def relative_errors(
    n: int, k: int, configs: Sequence[gemv.GemvConfig], device: torch.device
) -> dict[gemv.GemvConfig, float]:
    """‖gemv − float64 product‖ / ‖product‖ of each config on fresh random data (NaN where
    the kernel left an output unwritten: the output is poisoned first)."""
    weight = torch.randn(n, k, dtype=torch.bfloat16, device=device)
    x = torch.randn(1, k, dtype=torch.bfloat16, device=device)
    expected = x.double() @ weight.double().T  # (1, n)
    errors: dict[gemv.GemvConfig, float] = {}
    for config in configs:
        out = torch.full((1, n), float("nan"), dtype=torch.bfloat16, device=device)
        gemv.gemv(x, weight, out=out, config=config)
        errors[config] = float((out.double() - expected).norm() / expected.norm())
    return errors


def chain_ms(
    chain: DecodeChain,
    x: torch.Tensor,  # (1, hidden)
    residual: torch.Tensor,  # (1, hidden)
    overrides: Mapping[GemvKey, gemv.GemvConfig],
) -> float:
    """Median replay time of the chain captured with these table overrides."""
    with gemv_table(overrides):
        graph, _ = chain.capture(x, residual)
    return replay_ms(graph)


def table_config(key: GemvKey) -> gemv.GemvConfig:
    """The config gemv's table gives this projection."""
    config = gemv.choose_config(*key)
    if config is None:
        raise ValueError(f"the GEMV does not serve {key}")
    return config


def sweep_projection(
    name: str, key: GemvKey, chain: DecodeChain, x: torch.Tensor, residual: torch.Tensor
) -> gemv.GemvConfig:
    """Times the chain with this projection on each candidate; returns the config it keeps
    (the table's unless a finalist beats it by more than the table config's spread)."""
    table = table_config(key)
    candidates = list(dict.fromkeys([table, *SWEEP]))
    errors = relative_errors(key[1], key[2], candidates, x.device)
    times: dict[gemv.GemvConfig, list[float]] = {}
    for config in candidates:
        if errors[config] <= MAX_REL_ERROR:  # NaN fails too
            times[config] = [chain_ms(chain, x, residual, {key: config})]
    ranked = sorted(times, key=lambda c: times[c][0])
    finalists = list(dict.fromkeys([table, *ranked[:FINALISTS]]))
    for _ in range(REPEATS):
        for config in finalists:
            times[config].append(chain_ms(chain, x, residual, {key: config}))
    for config in candidates:
        runs = times.get(config, [])
        error = errors[config] if math.isfinite(errors[config]) else None
        line = {"projection": name, "n": key[1], "k": key[2], "config": asdict(config),
                "table": config == table, "rel_error": error,
                "chain_ms": round(statistics.median(runs), 4) if runs else None,
                "runs_ms": [round(ms, 4) for ms in runs]}  # fmt: skip
        print(json.dumps(line), flush=True)
    fastest = min(finalists, key=lambda c: statistics.median(times[c]))
    spread = max(times[table]) - min(times[table])
    gain = statistics.median(times[table]) - statistics.median(times[fastest])
    return fastest if gain > spread else table


def compare_tables(
    chain: DecodeChain,
    x: torch.Tensor,
    residual: torch.Tensor,
    chosen: Mapping[GemvKey, gemv.GemvConfig],
    rounds: int,
) -> dict[str, object]:
    """The chain with the current table and with `chosen`, captured `rounds` times each,
    interleaved: medians, spreads (max - min) and the runs."""
    runs: dict[str, list[float]] = {"current": [], "chosen": []}
    for _ in range(rounds):
        runs["current"].append(chain_ms(chain, x, residual, {}))
        runs["chosen"].append(chain_ms(chain, x, residual, chosen))
    summary: dict[str, object] = {}
    for table, ms in runs.items():
        summary[f"{table}_ms"] = round(statistics.median(ms), 4)
        summary[f"{table}_spread_ms"] = round(max(ms) - min(ms), 4)
        summary[f"{table}_runs_ms"] = [round(v, 4) for v in ms]
    saved = statistics.median(runs["current"]) - statistics.median(runs["chosen"])
    spread = max(max(ms) - min(ms) for ms in runs.values())
    summary.update(saved_ms=round(saved, 4), beats_spread=saved > spread)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="GEMV table sweep inside the decode chain.")
    parser.add_argument("--layers", type=int, default=32, help="layers per step (32)")
    parser.add_argument("--context", type=int, default=384, help="context tokens (384)")
    parser.add_argument("--copies", type=int, default=4, help="rotating weight copies (4)")
    parser.add_argument("--rounds", type=int, default=5, help="final captures per table (5)")
    parser.add_argument("--only", nargs="*", help="sweep these projections only (all)")
    options = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("the GEMV chain sweep needs a CUDA device")
    device = torch.device("cuda")
    chain, x, residual = llama_chain(
        options.layers, options.context, options.copies, device, with_head=True
    )
    projections = chain_projections(chain.shape)
    unknown = set(options.only or ()) - set(projections)
    if unknown:
        raise SystemExit(f"unknown projections {sorted(unknown)}; known: {list(projections)}")
    precompile_gemv([(1, config) for config in SWEEP])
    print(json.dumps({"pdl": use_pdl(device), "layers": options.layers,
                      "context": options.context, "candidates": len(SWEEP)}), flush=True)  # fmt: skip
    chosen: dict[GemvKey, gemv.GemvConfig] = {}
    names: dict[GemvKey, str] = {}
    for name, (n, k) in projections.items():
        if options.only is None or name in options.only:
            key = (1, n, k)
            chosen[key], names[key] = sweep_projection(name, key, chain, x, residual), name
    summary = compare_tables(chain, x, residual, chosen, options.rounds)
    summary.update(
        current_configs={names[key]: asdict(table_config(key)) for key in chosen},
        chosen_configs={names[key]: asdict(config) for key, config in chosen.items()},
    )
    print(json.dumps({"chain": "gemv table, current vs chosen", **summary}), flush=True)


if __name__ == "__main__":
    main()
