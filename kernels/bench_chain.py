"""The batch-1 decode step as a chain of kernels, timed with and without programmatic dependent
launch (PDL, kernels/triton_utils.py), JSON lines.

    python -m llmservice.kernels.bench_chain [--layers 32] [--context 384] [--profile]

One decoder layer of Llama-3.1-8B at one token is 10 kernels: add+RMSNorm, qkv GEMV, rotary,
KV-cache write, split-KV decode attention (plus a merge kernel when the context is cut into
several splits), o GEMV, add+RMSNorm, gate/up GEMV, SiLU-and-mul, down GEMV. The chain of `--layers` layers (4 rotating weight copies, so the
weights stream from HBM as in a real step) is captured in one CUDA graph, as the model
runner's decode graphs are, once with PDL switched off (LLMSERVICE_PDL=0) and once on, and the
graph's replay time is compared with the time the weights alone need at 3.0 TB/s.
`--profile` adds, per kernel of a layer, its duration and the time it adds to the chain (one
replay under torch.profiler). The same chain runs through the torch reference on the CPU
(tests/kernels/test_pdl.py). kernels/bench_gemv_chain.py re-tunes the GEMV table in this chain.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from llmservice.kernels import ops
from llmservice.kernels.triton_utils import PDL_ENV, use_pdl

HBM_GBS = 3000.0  # measured device-to-device copy on the H100 (KINDS.md)
EPS = 1e-5


@dataclass(frozen=True)
class ChainShape:
    """The sizes of one decoder layer."""

    hidden: int = 4096
    """Model width."""
    num_heads: int = 32
    """Query heads."""
    num_kv_heads: int = 8
    """Key/value heads (grouped-query attention)."""
    head_dim: int = 128
    """Width of one head."""
    intermediate: int = 14336
    """MLP inner width (gate and up each)."""
    block_size: int = 16
    """Tokens per KV-cache block."""
    vocab: int = 128256
    """Output vocabulary (the lm_head's rows)."""

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim


@dataclass(frozen=True)
class LayerWeights:
    """One layer's parameters and its paged KV cache."""

    input_norm: torch.Tensor
    """(hidden,)"""
    qkv: torch.Tensor
    """(q_size + 2 * kv_size, hidden)"""
    o: torch.Tensor
    """(hidden, q_size)"""
    post_norm: torch.Tensor
    """(hidden,)"""
    gate_up: torch.Tensor
    """(2 * intermediate, hidden)"""
    down: torch.Tensor
    """(hidden, intermediate)"""
    k_cache: torch.Tensor
    """(num_blocks, block_size, num_kv_heads, head_dim)"""
    v_cache: torch.Tensor
    """(num_blocks, block_size, num_kv_heads, head_dim)"""

    def weight_bytes(self) -> int:
        matrices = (self.qkv, self.o, self.gate_up, self.down)
        return sum(m.numel() * m.element_size() for m in matrices)


@dataclass(frozen=True)
class OutputHead:
    """The final RMSNorm and the lm_head after the last layer."""

    norm: torch.Tensor
    """(hidden,)"""
    weight: torch.Tensor
    """(vocab, hidden)"""


@dataclass(frozen=True)
class StepInputs:
    """What the runner hands every layer of a one-token decode step."""

    positions: torch.Tensor
    """(1,) int64: the new token's position."""
    slot_mapping: torch.Tensor
    """(1,) int64: its KV-cache slot."""
    block_tables: torch.Tensor
    """(1, num_blocks) int32"""
    seq_lens: torch.Tensor
    """(1,) int32: context length including the new token."""
    query_start_loc: torch.Tensor
    """(2,) int32"""
    cos_sin: torch.Tensor
    """(max_positions, head_dim) float32 [cos | sin]"""


def make_layer(
    shape: ChainShape, num_blocks: int, dtype: torch.dtype, device: torch.device
) -> LayerWeights:
    """Random weights scaled so activations stay O(1) through many layers."""

    def matrix(rows: int, cols: int) -> torch.Tensor:
        return (torch.randn(rows, cols, device=device) / math.sqrt(cols)).to(dtype)

    def cache() -> torch.Tensor:
        size = (num_blocks, shape.block_size, shape.num_kv_heads, shape.head_dim)
        return torch.randn(size, device=device).to(dtype)

    h = shape.hidden
    return LayerWeights(
        input_norm=(1 + 0.1 * torch.randn(h, device=device)).to(dtype),
        qkv=matrix(shape.q_size + 2 * shape.kv_size, h),
        o=matrix(h, shape.q_size),
        post_norm=(1 + 0.1 * torch.randn(h, device=device)).to(dtype),
        gate_up=matrix(2 * shape.intermediate, h),
        down=matrix(h, shape.intermediate),
        k_cache=cache(),
        v_cache=cache(),
    )


def make_head(shape: ChainShape, dtype: torch.dtype, device: torch.device) -> OutputHead:
    """A random output head (one copy: its 1 GB at Llama's vocabulary passes L2 anyway)."""
    weight = torch.randn(shape.vocab, shape.hidden, device=device) / math.sqrt(shape.hidden)
    norm = 1 + 0.1 * torch.randn(shape.hidden, device=device)
    return OutputHead(norm=norm.to(dtype), weight=weight.to(dtype))


def make_step(shape: ChainShape, context: int, device: torch.device) -> StepInputs:
    """One sequence of `context` tokens (the last one new) over blocks 1..n (0 is the null
    block), so the new token's slot is `context - 1` positions past block 1's start."""
    num_blocks = -(-context // shape.block_size)
    half = shape.head_dim // 2
    inv_freq = 500000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
    freqs = torch.outer(torch.arange(context, dtype=torch.float64), inv_freq)
    return StepInputs(
        positions=torch.tensor([context - 1], device=device),
        slot_mapping=torch.tensor([shape.block_size + context - 1], device=device),
        block_tables=torch.arange(1, num_blocks + 1, dtype=torch.int32, device=device)[None],
        seq_lens=torch.tensor([context], dtype=torch.int32, device=device),
        query_start_loc=torch.tensor([0, 1], dtype=torch.int32, device=device),
        cos_sin=torch.cat([freqs.cos(), freqs.sin()], dim=-1).float().to(device),
    )


def decode_layer(
    x: torch.Tensor,  # (1, hidden): the previous layer's output
    residual: torch.Tensor,  # (1, hidden)
    layer: LayerWeights,
    step: StepInputs,
    shape: ChainShape,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoder layer through `ops` (Triton on CUDA, the reference elsewhere), in the
    model's order of kernels; returns (output, residual)."""
    h, residual = ops.fused_add_rms_norm(x, residual, layer.input_norm, EPS)
    sizes = [shape.q_size, shape.kv_size, shape.kv_size]
    q, k, v = torch.split(ops.linear(h, layer.qkv), sizes, dim=-1)
    q = q.reshape(1, shape.num_heads, shape.head_dim)
    k = k.reshape(1, shape.num_kv_heads, shape.head_dim)
    v = v.reshape(1, shape.num_kv_heads, shape.head_dim)
    q, k = ops.rotary_embedding(step.positions, q, k, step.cos_sin)
    ops.write_kv_cache(k, v, layer.k_cache, layer.v_cache, step.slot_mapping)
    attention = ops.paged_attention(
        q, layer.k_cache, layer.v_cache, step.block_tables, step.seq_lens,
        step.query_start_loc, shape.head_dim**-0.5,
    )  # fmt: skip
    o = ops.linear(attention.reshape(1, shape.q_size), layer.o)
    h, residual = ops.fused_add_rms_norm(o, residual, layer.post_norm, EPS)
    return ops.linear(ops.silu_and_mul(ops.linear(h, layer.gate_up)), layer.down), residual


@dataclass(frozen=True)
class DecodeChain:
    """A decode step's `num_layers` layers, the i-th with layers[i % len(layers)], then the
    output head if it has one."""

    layers: Sequence[LayerWeights]
    """The weight copies the layers rotate over."""
    num_layers: int
    """Layers in the step."""
    step: StepInputs
    """The step's positions, slots and block tables."""
    shape: ChainShape
    """The layer sizes."""
    head: OutputHead | None = None
    """The final norm and lm_head after the layers, or None (the chain ends with the layers)."""

    def run(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's output, (1, hidden) or with a head (1, vocab) logits, and its residual."""
        for i in range(self.num_layers):
            layer = self.layers[i % len(self.layers)]
            x, residual = decode_layer(x, residual, layer, self.step, self.shape)
        if self.head is not None:
            h, residual = ops.fused_add_rms_norm(x, residual, self.head.norm, EPS)
            x = ops.linear(h, self.head.weight)  # (1, vocab)
        return x, residual

    def capture(
        self, x: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """The step captured in a CUDA graph (after one eager run that compiles); returns the
        graph and its output buffer (run's output)."""
        self.run(x, residual)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, _ = self.run(x, residual)
        return graph, out


@contextlib.contextmanager
def pdl_switched(enabled: bool) -> Iterator[None]:
    """Launches inside the block with PDL on or off (the kernels read LLMSERVICE_PDL at each
    launch, so a graph captured inside keeps the setting)."""
    previous = os.environ.get(PDL_ENV)
    os.environ[PDL_ENV] = "1" if enabled else "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[PDL_ENV]
        else:
            os.environ[PDL_ENV] = previous


def replay_ms(graph: torch.cuda.CUDAGraph, replays: int = 20) -> float:
    """Median wall time of one replay (device events), after 3 warm-up replays."""
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    times: list[float] = []
    for _ in range(replays + 3):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times[3:])


def layer_profile(graph: torch.cuda.CUDAGraph, num_layers: int) -> list[dict[str, object]]:
    """One replay under torch.profiler, per kernel position in a layer: its name, mean duration
    and mean exposed time (how far its end passes the latest end before it, i.e. what it adds
    to the chain; with PDL a kernel's duration includes the time it waits)."""
    with tempfile.TemporaryDirectory() as folder:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            graph.replay()
            torch.cuda.synchronize()
        path = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    kernels = sorted(
        (e for e in events if e.get("cat") == "kernel" and e.get("ph") == "X"),
        key=lambda e: float(e["ts"]),
    )
    per_layer = len(kernels) // num_layers
    durations = [0.0] * per_layer
    exposed = [0.0] * per_layer
    latest_end = float(kernels[0]["ts"]) if kernels else 0.0
    for i, event in enumerate(kernels[: per_layer * num_layers]):
        end = float(event["ts"]) + float(event["dur"])
        durations[i % per_layer] += float(event["dur"]) / num_layers
        exposed[i % per_layer] += max(0.0, end - latest_end) / num_layers
        latest_end = max(latest_end, end)
    return [
        {"position": i, "kernel": str(kernels[i]["name"])[:48], "dur_us": round(durations[i], 2),
         "exposed_us": round(exposed[i], 2)}
        for i in range(per_layer)
    ]  # fmt: skip


def llama_chain(
    num_layers: int, context: int, copies: int, device: torch.device, with_head: bool = False
) -> tuple[DecodeChain, torch.Tensor, torch.Tensor]:
    """Llama-3.1-8B's decode step at batch 1 over `copies` rotating bf16 weight copies (seed 0),
    with its output head or not; returns the chain, x and residual ((1, hidden) each)."""
    shape = ChainShape()
    num_blocks = 1 + -(-context // shape.block_size)
    torch.manual_seed(0)
    layers = [make_layer(shape, num_blocks, torch.bfloat16, device) for _ in range(copies)]
    head = make_head(shape, torch.bfloat16, device) if with_head else None
    chain = DecodeChain(layers, num_layers, make_step(shape, context, device), shape, head)
    x = torch.randn(1, shape.hidden, device=device, dtype=torch.bfloat16)
    return chain, x, torch.randn_like(x)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Decode-step kernel chain, PDL off vs on.")
    parser.add_argument("--layers", type=int, default=32, help="layers per step (32)")
    parser.add_argument("--context", type=int, default=384, help="context tokens (384)")
    parser.add_argument("--copies", type=int, default=4, help="rotating weight copies (4)")
    parser.add_argument(
        "--profile", action="store_true", help="also each kernel's duration and exposed time"
    )
    options = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("the chain benchmark needs a CUDA device")
    device = torch.device("cuda")
    chain, x, residual = llama_chain(options.layers, options.context, options.copies, device)
    floor_ms = options.layers * chain.layers[0].weight_bytes() / HBM_GBS / 1e6
    results: dict[bool, tuple[float, torch.Tensor]] = {}
    graphs: dict[bool, torch.cuda.CUDAGraph] = {}
    for enabled in (False, True) if use_pdl(device) else (False,):
        with pdl_switched(enabled):
            graphs[enabled], out = chain.capture(x, residual)
        ms = replay_ms(graphs[enabled])
        results[enabled] = (ms, out.clone())
        line = {
            "chain": f"{options.layers} decode layers, batch 1, context {options.context}",
            "pdl": enabled, "ms": round(ms, 4), "us_per_layer": round(1000 * ms / options.layers, 2),
            "weights_floor_ms": round(floor_ms, 4), "pct_of_floor": round(100 * floor_ms / ms, 1),
        }  # fmt: skip
        print(json.dumps(line), flush=True)
    # NOTE: profiles only after every timing. On the H100 the PDL graph, timed after the other
    # graph's profile, took 5.51 ms, against 5.32 ms in a run without a profiler (and its own
    # profile's kernels summed to 5.33 ms).
    if options.profile:
        for enabled, graph in graphs.items():
            for row in layer_profile(graph, options.layers):
                print(json.dumps({"pdl": enabled, **row}), flush=True)
    if len(results) == 2:
        (off_ms, off_out), (on_ms, on_out) = results[False], results[True]
        summary = {
            "chain": "summary", "saved_ms": round(off_ms - on_ms, 4),
            "saved_pct": round(100 * (off_ms - on_ms) / off_ms, 2),
            "outputs_equal": bool(torch.equal(off_out, on_out)),
        }  # fmt: skip
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
