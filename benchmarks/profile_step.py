"""Kernel-level profile of W3's mixed steps (~16K tokens: 4K-token prompt chunks plus decodes).

Builds `LLM(...)` for the Llama-3.1-8B config with dummy weights (as the bench does), adds W3's
requests (4096-token prompts, 32 output tokens) to the engine core and steps it until the
batches look like W3's steady state (prompt chunks behind a few dozen decodes). Then two
torch.profiler windows:

1. synchronous steps (the engine's overlap switched off, a device sync around each step): the
   kernels of exactly these steps, as a table sorted by GPU time with each kernel's share of
   the step and its achieved rate (GEMMs: TFLOP/s from the shapes torch recorded; the Triton
   kernels: FLOPs or bytes counted from the step's chunks, the fewest each must do or move),
   plus the time the GPU waits inside a step (host preparation before the first kernel);
2. the overlapped loop as the bench runs it: whether the GPU idles between steps, and which
   host calls were running during the longest idle gaps.

Usage: python3 -P benchmarks/profile_step.py [--warm-steps 12] [--steps 3] [--trace DIR]
(with the llmservice link tree on PYTHONPATH; needs a CUDA device). `--trace` keeps the two
Chrome traces (open them in Perfetto).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from llmservice import LLM
from llmservice.runtime.bench.workloads import DEFAULT_MODEL, get_workload, make_prompts
from llmservice.runtime.engine_core import EngineCore, EngineCoreRequest
from llmservice.runtime.model_config import ModelConfig
from llmservice.runtime.sampling_params import SamplingParams
from llmservice.scheduler import SchedulerOutput

GEMM_OPS = ("aten::mm", "aten::addmm")
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


@dataclass(frozen=True)
class StepShape:
    """What one step computes: its prompt chunks and its decodes."""

    num_tokens: int
    """New tokens in the step (all sequences)."""
    chunks: tuple[tuple[int, int], ...]
    """(new tokens, cached context before them) of every sequence with more than one token."""
    decode_lens: tuple[int, ...]
    """Context length (the new token included) of every one-token sequence."""

    @staticmethod
    def of(output: SchedulerOutput) -> StepShape:
        """The shape of a scheduled step."""
        decodes = [c for c in output.chunks if c.num_new_tokens == 1]
        return StepShape(
            num_tokens=output.num_batched_tokens,
            chunks=tuple(
                (c.num_new_tokens, c.num_computed_tokens)
                for c in output.chunks
                if c.num_new_tokens > 1
            ),
            decode_lens=tuple(c.num_computed_tokens + 1 for c in decodes),
        )


# Work of one step in one kernel family: (amount, "TFLOP/s" | "GB/s"), summed over the layers.
# Bytes are the fewest the kernel must move (each input read once, each output written once).
Work = Callable[[StepShape, ModelConfig], tuple[float, str]]


def _attention_flops(shape: StepShape, m: ModelConfig) -> tuple[float, str]:
    # Causal: new token i of a chunk with c cached tokens sees c + i + 1 keys (QK^T and PV).
    pairs = sum(q * c + q * (q + 1) / 2 for q, c in shape.chunks)
    return 4 * pairs * m.head_dim * m.num_heads * m.num_layers, "TFLOP/s"


def _decode_bytes(shape: StepShape, m: ModelConfig) -> tuple[float, str]:
    per_token = 2 * m.num_kv_heads * m.head_dim * m.dtype.itemsize  # K and V
    return sum(shape.decode_lens) * per_token * m.num_layers, "GB/s"


def _gated_flops(shape: StepShape, m: ModelConfig) -> tuple[float, str]:
    # The gate/up GEMM (2 x intermediate wide) of every token; the SiLU rides in its epilogue.
    return 2 * shape.num_tokens * m.hidden_size * 2 * m.intermediate_size * m.num_layers, "TFLOP/s"


def _per_token_bytes(elements: Callable[[ModelConfig], float]) -> Work:
    def work(shape: StepShape, m: ModelConfig) -> tuple[float, str]:
        return shape.num_tokens * elements(m) * m.dtype.itemsize * m.num_layers, "GB/s"

    return work


# Triton kernel name -> its work; the elements each token reads plus writes, per layer.
KERNEL_WORK: dict[str, Work] = {
    "_extend_kernel": _attention_flops,
    "_decode_split_kernel": _decode_bytes,
    "_silu_and_mul_kernel": _per_token_bytes(lambda m: 3 * m.intermediate_size),
    "_gated_linear_kernel": _gated_flops,
    # Two norms a layer; all but the first add the residual (read x, residual; write both).
    "_rms_norm_kernel": _per_token_bytes(lambda m: 2 * 4 * m.hidden_size),
    "_rotary_kernel": _per_token_bytes(lambda m: 2 * (m.num_heads + m.num_kv_heads) * m.head_dim),
    "_write_kv_kernel": _per_token_bytes(lambda m: 2 * 2 * m.num_kv_heads * m.head_dim),
}


@dataclass
class Row:
    """One line of the kernel table: a kernel (GEMMs: a kernel at one shape)."""

    calls: int = 0
    us: float = 0.0
    flops: float = 0.0
    """GEMMs only: 2*M*N*K summed over the calls."""


@dataclass(frozen=True)
class Gap:
    """A stretch of a window in which no kernel or copy ran on the GPU."""

    start: float
    """Microseconds from the window's first device event."""
    length: float
    """Microseconds."""
    before: str
    """The device event that ended last before the gap."""
    after: str
    """The device event that ended the gap."""


@dataclass
class Timeline:
    """The device intervals of one profiled window and what the host ran meanwhile."""

    device: list[dict[str, Any]] = field(default_factory=list)
    """Kernels, copies and memsets on the GPU, in start order."""
    cpu_ops: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Torch operators by their external id (what a device event's "External id" names)."""
    host_calls: list[dict[str, Any]] = field(default_factory=list)
    """Torch operators and CUDA runtime/driver calls (launches, copies, syncs) on the host."""

    @staticmethod
    def load(path: Path) -> Timeline:
        """Reads a Chrome trace written by torch.profiler."""
        timeline = Timeline()
        for event in json.loads(path.read_text())["traceEvents"]:
            cat = event.get("cat", "")
            if event.get("ph") != "X":
                continue
            if cat in DEVICE_CATEGORIES:
                timeline.device.append(event)
            elif cat == "cpu_op":
                timeline.cpu_ops[event.get("args", {}).get("External id", -1)] = event
            if cat in ("cuda_runtime", "cuda_driver", "cpu_op"):
                timeline.host_calls.append(event)
        timeline.device.sort(key=lambda e: e["ts"])
        return timeline

    def busy_and_gaps(self) -> tuple[float, float, list[Gap]]:
        """(span us, busy us, idle gaps longest first)."""
        if not self.device:
            return 0.0, 0.0, []
        first = self.device[0]
        start, end, last = first["ts"], first["ts"], first["name"]
        busy, gaps = 0.0, []
        for event in self.device:
            if event["ts"] > end:
                gaps.append(Gap(end - start, event["ts"] - end, last, event["name"]))
            stop = event["ts"] + event["dur"]
            busy += max(0.0, stop - max(event["ts"], end))
            if stop > end:
                end, last = stop, event["name"]
        return end - start, busy, sorted(gaps, key=lambda g: -g.length)

    def blocking_host_calls(self, min_us: float) -> list[tuple[float, float, str]]:
        """Host calls (torch operators, CUDA calls) that took at least `min_us`: (start us from
        the window's first device event, length us, name), in time order, outermost first."""
        origin = self.device[0]["ts"] if self.device else 0.0
        return [
            (e["ts"] - origin, e["dur"], e["name"])
            for e in sorted(self.host_calls, key=lambda e: (e["ts"], -e.get("dur", 0.0)))
            if e.get("dur", 0.0) >= min_us
        ]

    def rows(self) -> dict[str, Row]:
        """Device time per kernel name; GEMMs split by shape with their FLOPs."""
        rows: dict[str, Row] = defaultdict(Row)
        for event in self.device:
            name = event["name"]
            op = self.cpu_ops.get(event.get("args", {}).get("External id", -2))
            flops = 0.0
            # NOTE: cuBLAS also issues a memset per GEMM (same op); only the kernel does the FLOPs.
            if op is not None and op["name"] in GEMM_OPS and event["cat"] == "kernel":
                m, k, n = _gemm_dims(op["args"].get("Input Dims", []))
                flops = 2.0 * m * k * n
                name = f"GEMM {m}x{k}x{n} {name[:40]}"
            row = rows[name]
            row.calls += 1
            row.us += event["dur"]
            row.flops += flops
        return rows


def _gemm_dims(dims: list[list[int]]) -> tuple[int, int, int]:
    """(M, K, N) of aten::mm ([M, K], [K, N]) or aten::addmm (bias, [M, K], [K, N])."""
    a, b = dims[-2], dims[-1]
    return a[0], a[1], b[1]


def rate(row: Row, name: str, shapes: list[StepShape], model: ModelConfig) -> str:
    """The achieved rate of a table row, or '' where no work is counted for it."""
    seconds = row.us * 1e-6
    if row.flops:
        return f"{row.flops / seconds / 1e12:7.0f} TFLOP/s"
    work = KERNEL_WORK.get(name)
    if work is None or not shapes:
        return ""
    amounts = [work(shape, model) for shape in shapes]
    total, unit = sum(a for a, _ in amounts), amounts[0][1]
    scale = 1e12 if unit == "TFLOP/s" else 1e9
    return f"{total / seconds / scale:7.0f} {unit}" if total else ""


@contextmanager
def recorded_steps(core: EngineCore) -> Iterator[list[StepShape]]:
    """The shapes of the steps scheduled inside the block, in order."""
    original = core.scheduler.schedule
    shapes: list[StepShape] = []

    def schedule(*args: Any, **kwargs: Any) -> SchedulerOutput:
        output = original(*args, **kwargs)
        shapes.append(StepShape.of(output))
        return output

    core.scheduler.schedule = schedule  # type: ignore[method-assign]
    try:
        yield shapes
    finally:
        core.scheduler.schedule = original  # type: ignore[method-assign]


def run_steps(core: EngineCore, steps: int) -> None:
    """`steps` calls of the engine's step."""
    for _ in range(steps):
        core.step()


def profiled(run: Callable[[], None], trace: Path, record_shapes: bool) -> float:
    """Runs `run` under torch.profiler (CPU and CUDA), writes its Chrome trace and returns the
    wall seconds of `run` up to the device being idle."""
    with profile(
        activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=record_shapes
    ) as prof:
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    prof.export_chrome_trace(str(trace))
    return wall


def print_kernel_table(
    timeline: Timeline, shapes: list[StepShape], model: ModelConfig, top: int
) -> None:
    """The top kernels of the synchronous window per step, with share and rate."""
    steps = len(shapes)
    span, busy, _ = timeline.busy_and_gaps()
    rows = timeline.rows()
    print(f"\n{'kernel':<66}{'calls/step':>11}{'ms/step':>9}{'share':>7}  rate")
    for name, row in sorted(rows.items(), key=lambda item: -item[1].us)[:top]:
        print(
            f"{name[:65]:<66}{row.calls / steps:>11.1f}{row.us / steps / 1e3:>9.2f}"
            f"{row.us / busy:>7.1%}  {rate(row, name, shapes, model)}"
        )
    gemm = sum(r.us for n, r in rows.items() if n.startswith("GEMM"))
    gemm_flops = sum(r.flops for r in rows.values())
    named = {n: rows[n].us if n in rows else 0.0 for n in KERNEL_WORK}
    rest = busy - gemm - sum(named.values())
    print(f"\nper step: GPU busy {busy / steps / 1e3:.1f} ms of {span / steps / 1e3:.1f} ms span")
    print(f"  GEMMs {gemm / steps / 1e3:.1f} ms ({gemm_flops / max(gemm, 1.0) / 1e6:.0f} TFLOP/s)")
    for name, us in named.items():
        print(f"  {name:<24}{us / steps / 1e3:>7.1f} ms")
    print(f"  {'everything else':<24}{rest / steps / 1e3:>7.1f} ms")


def print_gaps(timeline: Timeline, label: str, steps: int) -> None:
    """GPU idle time of a window, its longest gaps, and the host calls that blocked >= 5 ms
    (in the overlapped loop, a host call that waits for the GPU means the next step's launches
    start only once the GPU has run dry)."""
    span, busy, gaps = timeline.busy_and_gaps()
    idle = span - busy
    print(
        f"\n{label}: {steps} steps, {span / steps / 1e3:.1f} ms of GPU span/step; GPU busy "
        f"{busy / 1e3:.1f} of {span / 1e3:.1f} ms ({idle / max(span, 1.0):.2%} idle, "
        f"{idle / steps / 1e3:.2f} ms/step); gaps > 50 us: {sum(g.length > 50 for g in gaps)}"
    )
    for gap in gaps[:6]:
        print(
            f"  gap {gap.length / 1e3:6.2f} ms at {gap.start / 1e3:8.2f} ms: "
            f"{gap.before[:30]} -> {gap.after[:30]}"
        )
    for start, length, name in timeline.blocking_host_calls(5000.0)[:16]:
        print(f"  host {length / 1e3:7.2f} ms in {name[:40]} at {start / 1e3:8.2f} ms")


def describe(shapes: list[StepShape]) -> None:
    """One line per profiled step: tokens, decodes, prompt chunks as new+cached tokens."""
    for i, s in enumerate(shapes):
        chunks = ", ".join(f"{q}+{c}" for q, c in s.chunks)
        print(f"step {i}: {s.num_tokens} tokens, {len(s.decode_lens)} decodes; chunks {chunks}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warm-steps", type=int, default=12, help="engine steps before profiling")
    parser.add_argument("--steps", type=int, default=3, help="steps in each profiled window")
    parser.add_argument("--top", type=int, default=15, help="kernel table rows")
    parser.add_argument("--trace", type=Path, help="folder to keep the Chrome traces in")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("profile_step needs a CUDA device")

    start = time.perf_counter()
    llm = LLM(args.model, load_format="dummy", dtype="bfloat16", device="cuda")
    print(f"start-up {time.perf_counter() - start:.1f} s; {torch.cuda.get_device_name()}")
    core = llm.engine_core
    model = core.model_config
    workload = get_workload("W3")
    params = SamplingParams(max_tokens=workload.output_len, temperature=0.0, ignore_eos=True)
    for i, prompt in enumerate(make_prompts(workload, model.vocab_size, 0)):
        core.add_request(EngineCoreRequest(f"w3-{i}", prompt, params))
    for _ in range(args.warm_steps):
        core.step()

    trace_dir = args.trace or Path(tempfile.mkdtemp(prefix="profile_step-"))
    trace_dir.mkdir(parents=True, exist_ok=True)
    sync_trace, async_trace = trace_dir / "sync_steps.json", trace_dir / "overlapped_steps.json"

    # 1. Synchronous steps: drain the step in flight, then one step per call.
    core.async_scheduling = False
    core.step()
    with recorded_steps(core) as sync_shapes:
        wall = profiled(lambda: run_steps(core, args.steps), sync_trace, True)
    describe(sync_shapes)
    sync_timeline = Timeline.load(sync_trace)
    print_kernel_table(sync_timeline, sync_shapes, model, args.top)
    print(f"\nsynchronous steps: {wall * 1e3 / len(sync_shapes):.1f} ms wall/step")
    print_gaps(sync_timeline, "synchronous steps", len(sync_shapes))

    # 2. The overlapped loop, as the bench runs it (the first call only launches).
    core.async_scheduling = True
    core.step()
    with recorded_steps(core) as async_shapes:
        # No wall time here: the first call also waits for the step launched before the window.
        profiled(lambda: run_steps(core, args.steps), async_trace, False)
    print_gaps(Timeline.load(async_trace), "overlapped steps", len(async_shapes))
    print(f"traces: {sync_trace} {async_trace}")


if __name__ == "__main__":
    main()
