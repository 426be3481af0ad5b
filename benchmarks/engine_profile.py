"""Start-up, KV capacity and a torch.profiler view of one prefill and one decode step on CUDA.

Builds `LLM(...)` for the Llama-3.1-8B config with dummy weights (as the bench does), prints
start-up time, KV capacity in tokens and graph capture time, then profiles: one prefill step
(`max_num_batched_tokens` prompt tokens of 512-token prompts) and one decode step of a batch of
`--decode-batch` sequences with 512-token contexts. For each it prints the step's wall time,
the host time before the GPU starts (schedule + input preparation) and the top CUDA kernels.

Usage: python3 -P benchmarks/engine_profile.py [--decode-batch 256] [--out trace-dir]
(with the llmservice link tree on PYTHONPATH; needs a CUDA device).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from llmservice import LLM
from llmservice.runtime.engine_core import EngineCore, EngineCoreRequest
from llmservice.runtime.sampling_params import SamplingParams

CONFIG = Path(__file__).resolve().parents[1] / "runtime/bench/configs/llama-3.1-8b"


def _timed_step(core: EngineCore) -> tuple[float, float]:
    """(wall ms of one step, ms until the runner starts its forward pass)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    scheduled = core.scheduler.schedule()
    scheduled_at = time.perf_counter()
    result = core.model_runner.execute(scheduled, core.scheduler.get_request)
    core.scheduler.update(scheduled, result.sampled_token_ids)
    torch.cuda.synchronize()
    end = time.perf_counter()
    return (end - start) * 1e3, (scheduled_at - start) * 1e3


def _profile_step(core: EngineCore, label: str, trace_dir: Path | None) -> None:
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        wall_ms, schedule_ms = _timed_step(core)
    print(f"== {label}: step {wall_ms:.2f} ms wall, schedule {schedule_ms:.2f} ms (profiled)")
    print(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60)
    )
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace_dir / f"{label.replace(' ', '_')}.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decode-batch", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    start = time.perf_counter()
    llm = LLM(str(CONFIG), load_format="dummy", dtype="bfloat16", device="cuda")
    startup = time.perf_counter() - start
    core = llm.engine_core
    runner = core.model_runner
    print(
        f"start-up {startup:.1f} s (graph capture {runner.graph_capture_s:.1f} s); "
        f"KV capacity {runner.kv_capacity_tokens} tokens ({runner.num_blocks} blocks); "
        f"GPU memory allocated {torch.cuda.memory_allocated() / 2**30:.1f} GiB, "
        f"reserved {torch.cuda.memory_reserved() / 2**30:.1f} GiB"
    )
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True)
    for i in range(args.decode_batch):
        prompt = torch.randint(10, 120000, (args.prompt_len,), generator=gen).tolist()
        core.add_request(EngineCoreRequest(f"r{i}", prompt, params))
    # The first prefill step (warm), then one profiled prefill step.
    _timed_step(core)
    _profile_step(core, "prefill step", args.out)
    while any(
        r.num_computed_tokens < r.num_prompt_tokens
        for r in (core.scheduler.get_request(f"r{i}") for i in range(args.decode_batch))
        if r is not None
    ):
        _timed_step(core)
    decode_ms = [_timed_step(core)[0] for _ in range(10)]
    print(f"decode batch {args.decode_batch}: step ms {[round(t, 2) for t in decode_ms]}")
    _profile_step(core, f"decode step batch {args.decode_batch}", args.out)
    graphs = runner.graphs
    print(f"graph replays so far: {graphs.num_replays if graphs else 'no graphs'}")


if __name__ == "__main__":
    main()
