"""Micro-benchmark: CPU time of one scheduler step (`schedule()` + `update()`) while decoding.

It fills the scheduler with N requests, runs their prefills, then times decode steps in which
every request gets one token. No model runs: sampled tokens come from a cheap deterministic
function, so the figure is pure scheduling overhead (what the GPU would wait on).
Prints one JSON line. Example: `.venv/bin/python benchmarks/scheduler_step.py --num-requests 256`.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time

from llmservice.kvcache import KVCacheManager
from llmservice.scheduler import Request, RequestLimits, Scheduler, SchedulerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2000, help="timed decode steps")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--max-num-batched-tokens", type=int, default=8192)
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument(
        "--lockstep",
        action="store_true",
        help="equal prompt lengths: every request fills a block in the same step (worst case); "
        "by default lengths differ by up to a block, so 1/block_size of them fill one per step",
    )
    args = parser.parse_args()

    n, bs = args.num_requests, args.block_size
    # Room for the prefill steps (early requests decode meanwhile) and every timed step.
    prefill_steps = -(-n * args.prompt_len // args.max_num_batched_tokens)
    max_model_len = args.prompt_len + bs + prefill_steps + args.steps + 16
    blocks_per_request = -(-max_model_len // bs)
    kv = KVCacheManager(n * blocks_per_request + 1, bs, not args.no_prefix_caching)
    config = SchedulerConfig(
        max_num_seqs=n,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=max_model_len,
    )
    scheduler = Scheduler(config, kv)
    for i in range(n):
        # Distinct prompts: every block is hashed and cached, none is shared.
        prompt_len = args.prompt_len + (0 if args.lockstep else i % bs)
        prompt = [(i * 7919 + j) % 32000 for j in range(prompt_len)]
        scheduler.add_request(Request(f"req-{i}", prompt, RequestLimits(max_tokens=10**9)))

    def step() -> None:
        out = scheduler.schedule()
        sampled = {c.request_id: (c.num_computed_tokens * 31) % 32000 for c in out.chunks}
        scheduler.update(out, sampled)

    # Prefill until every request decodes (one token each per step).
    while len(scheduler.running) < n or any(
        r.num_computed_tokens < r.num_tokens - 1 for r in scheduler.running
    ):
        step()

    # Wall time (what the GPU would wait) and this thread's CPU time (the same work without the
    # time other processes take the core away: this box is shared).
    schedule_ns: list[int] = []
    update_ns: list[int] = []
    cpu_ns: list[int] = []
    gc.collect()
    for _ in range(args.steps):
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        out = scheduler.schedule()
        t1 = time.perf_counter_ns()
        c1 = time.thread_time_ns()
        # Building the sampled-token dict is the runner's work, so it stays out of the timing.
        sampled = {c.request_id: (c.num_computed_tokens * 31) % 32000 for c in out.chunks}
        c2 = time.thread_time_ns()
        t2 = time.perf_counter_ns()
        scheduler.update(out, sampled)
        t3 = time.perf_counter_ns()
        c3 = time.thread_time_ns()
        if len(out.chunks) != n or out.num_batched_tokens != n:
            raise RuntimeError(f"expected {n} decode chunks, got {len(out.chunks)}")
        schedule_ns.append(t1 - t0)
        update_ns.append(t3 - t2)
        cpu_ns.append(c1 - c0 + c3 - c2)
    kv.check_integrity()

    total = sorted(s + u for s, u in zip(schedule_ns, update_ns, strict=True))
    cpu_ns.sort()
    print(
        json.dumps(
            {
                "benchmark": "scheduler_step",
                "num_running": n,
                "prompt_len": args.prompt_len,
                "block_size": bs,
                "prefix_caching": not args.no_prefix_caching,
                "lockstep": args.lockstep,
                "steps": args.steps,
                "step_us_mean": round(statistics.fmean(total) / 1e3, 1),
                "step_us_p50": round(total[len(total) // 2] / 1e3, 1),
                "step_us_p99": round(total[int(len(total) * 0.99)] / 1e3, 1),
                "step_cpu_us_p50": round(cpu_ns[len(cpu_ns) // 2] / 1e3, 1),
                "step_cpu_us_p99": round(cpu_ns[int(len(cpu_ns) * 0.99)] / 1e3, 1),
                "schedule_us_p50": round(sorted(schedule_ns)[len(total) // 2] / 1e3, 1),
                "update_us_p50": round(sorted(update_ns)[len(total) // 2] / 1e3, 1),
                "schedule_us_mean": round(statistics.fmean(schedule_ns) / 1e3, 1),
                "update_us_mean": round(statistics.fmean(update_ns) / 1e3, 1),
                "python": platform.python_version(),
                "machine": platform.processor() or platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
