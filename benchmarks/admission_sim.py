"""W1 through the real scheduler with a step-cost model of an H100 (Llama-3.1-8B), no GPU.

Compares admission policies (scheduler/headroom.py): how many steps, preemptions and computed
tokens W1 (1000 x 512 prompt / 256 output, 27,508 KV blocks of 16 as on the H100) costs, and a
modelled GPU time per step: GEMMs max(5.3 ms of weight reads, tokens x 14 GFLOP at 740
TFLOP/s), decode K/V reads at 3.0 TB/s (128 KiB per context token), 1.6 us per token of
element-wise work. The model is for comparing policies, not a prediction of wall time.

Usage: python benchmarks/admission_sim.py
"""

from __future__ import annotations

import dataclasses
import random

from llmservice.kvcache import KVCacheManager
from llmservice.scheduler import (
    DEFAULT_HEADROOM,
    NO_HEADROOM,
    HeadroomConfig,
    Request,
    RequestLimits,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
)


def step_ms(out: SchedulerOutput) -> float:
    """Modelled GPU time of one step (see the module docstring)."""
    tokens = out.num_batched_tokens
    gemm = max(5.3, tokens * 14e9 / 740e12 * 1e3)
    kv = sum(
        (c.num_computed_tokens + 1) * 131072 / 3.0e12 * 1e3
        for c in out.chunks
        if c.num_new_tokens == 1
    )
    return gemm + kv + tokens * 1.6e-3


def simulate(headroom: HeadroomConfig, num_blocks: int = 27508) -> str:
    """One W1 run through the scheduler; a line of figures."""
    config = SchedulerConfig(1024, 16384, 131072, headroom=headroom)
    scheduler = Scheduler(config, KVCacheManager(num_blocks, 16, True))
    rng = random.Random(0)
    for i in range(1000):
        prompt = [rng.randrange(128000) for _ in range(512)]
        scheduler.add_request(
            Request(f"r{i}", prompt, RequestLimits(max_tokens=256), arrival_time=float(i))
        )
    total_ms, steps, computed, most = 0.0, 0, 0, 0
    while scheduler.has_unfinished_requests():
        out = scheduler.schedule()
        computed += out.num_batched_tokens
        total_ms += step_ms(out)
        steps += 1
        most = max(most, len(out.chunks))
        scheduler.update(out, {c.request_id: 5 for c in out.chunks if c.samples})
    return (
        f"steps {steps}, modelled GPU time {total_ms / 1e3:.2f} s, tokens computed {computed} "
        f"(no recompute: {1000 * 767}), preemptions {scheduler.stats().num_preemptions_total}, "
        f"largest batch {most}"
    )


def main() -> None:
    for name, headroom in [
        ("no headroom (vLLM's admission)", NO_HEADROOM),
        ("default headroom", DEFAULT_HEADROOM),
        ("headroom decaying 2x faster", dataclasses.replace(DEFAULT_HEADROOM, decay=0.003)),
    ]:
        print(f"{name}: {simulate(headroom)}")


if __name__ == "__main__":
    main()
