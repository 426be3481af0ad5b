"""Where a workload's time goes, step by step: wall time of every engine step by step kind.

Runs one offline workload (W1-W4, `llmservice.runtime.bench.workloads`) through `LLM(...)` as the
bench does (Llama-3.1-8B config, dummy weights, greedy, EOS ignored), after a short warm-up, and
records each `EngineCore.step()`: its wall time, and the shape of the step whose tokens it
waited for. With the overlapped loop a call launches step N+1 and then waits for step N, so in
steady state the wall time of a call is the device time of step N; the first call of the run
launches without waiting and counts as "launch only". Kinds:

- decode: every sequence has one new token and the batch is within the CUDA-graph ladder (a
  graph runs it, unless cascade attention does, eagerly);
- decode-eager: one new token each, but the batch is larger than the largest graph;
- mixed: prefill chunks and decodes together; prefill: prefill chunks only.

Prints one table (steps, seconds, mean sequences and tokens per step, ms per step) and the sum,
which is the run's wall time less the output processing between steps.

Usage: python3 -P benchmarks/step_trace.py --workload W1 [--num-requests N] [--no-prefix-caching]
(with the llmservice link tree on PYTHONPATH; CUDA for the real figures).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from llmservice import LLM, SamplingParams
from llmservice.runtime.bench.workloads import DEFAULT_MODEL, get_workload, make_prompts
from llmservice.runtime.engine_core import EngineCore, EngineCoreOutput
from llmservice.scheduler import SchedulerOutput


@dataclass
class _Kind:
    steps: int = 0
    seconds: float = 0.0
    seqs: int = 0
    tokens: int = 0


def step_kind(output: SchedulerOutput, graph_max: int) -> str:
    """The kind of a scheduled step (see the module docstring)."""
    decodes = sum(1 for chunk in output.chunks if chunk.num_new_tokens == 1)
    if decodes == len(output.chunks):
        return "decode" if len(output.chunks) <= graph_max else "decode-eager"
    return "mixed" if decodes else "prefill"


def trace(core: EngineCore, kinds: dict[str, _Kind]) -> None:
    """Wrap `core.step` so every call adds its wall time to the kind of the step it finished."""
    original_step, original_schedule = core.step, core.scheduler.schedule
    graphs = core.model_runner.graphs
    graph_max = graphs.max_batch_size if graphs is not None else 0
    scheduled: list[SchedulerOutput] = []

    def schedule(*args: Any, **kwargs: Any) -> SchedulerOutput:
        output = original_schedule(*args, **kwargs)
        scheduled.append(output)
        return output

    def traced() -> list[EngineCoreOutput]:
        in_flight = core._in_flight
        scheduled.clear()
        start = time.perf_counter()
        outputs = original_step()
        elapsed = time.perf_counter() - start
        if in_flight is not None:
            finished: SchedulerOutput | None = in_flight[0]  # overlapped: waited for step N
        elif core._in_flight is None and scheduled:
            finished = scheduled[-1]  # synchronous: scheduled and ran in this call
        else:
            finished = None
        if finished is None:
            kind = kinds["launch only"]
        else:
            kind = kinds[step_kind(finished, graph_max)]
            kind.seqs += len(finished.chunks)
            kind.tokens += sum(chunk.num_new_tokens for chunk in finished.chunks)
        kind.steps += 1
        kind.seconds += elapsed
        return outputs

    core.scheduler.schedule = schedule  # type: ignore[method-assign]
    core.step = traced  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", default="W1")
    parser.add_argument("--num-requests", type=int)
    parser.add_argument("--input-len", type=int)
    parser.add_argument("--output-len", type=int)
    parser.add_argument("--shared-prefix-len", type=int)
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    workload = get_workload(args.workload).with_sizes(
        args.num_requests, args.input_len, args.output_len, args.shared_prefix_len
    )
    start = time.perf_counter()
    llm = LLM(
        args.model,
        load_format="dummy",
        dtype="bfloat16",
        device=args.device,
        enable_prefix_caching=not args.no_prefix_caching,
    )
    print(f"start-up {time.perf_counter() - start:.1f} s")
    core = llm.engine_core
    vocab = core.model_config.vocab_size
    prompts = [{"prompt_token_ids": p} for p in make_prompts(workload, vocab, 0)]
    warmup = [{"prompt_token_ids": p} for p in make_prompts(workload, vocab, 0, "warmup")[:4]]
    params = SamplingParams(max_tokens=workload.output_len, temperature=0.0, ignore_eos=True)
    llm.generate(warmup, SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True))
    kinds: dict[str, _Kind] = defaultdict(_Kind)
    trace(core, kinds)
    start = time.perf_counter()
    llm.generate(prompts, params)
    wall = time.perf_counter() - start
    print(f"{workload.name}: {len(prompts)} requests, {wall:.2f} s wall")
    print(f"{'kind':<14}{'steps':>7}{'seconds':>9}{'seqs/step':>11}{'tok/step':>10}{'ms/step':>9}")
    for name, kind in sorted(kinds.items(), key=lambda item: -item[1].seconds):
        steps = max(kind.steps, 1)
        print(
            f"{name:<14}{kind.steps:>7}{kind.seconds:>9.2f}{kind.seqs / steps:>11.1f}"
            f"{kind.tokens / steps:>10.1f}{kind.seconds / steps * 1e3:>9.2f}"
        )
    print(
        f"{'sum':<14}{sum(k.steps for k in kinds.values()):>7}"
        f"{sum(k.seconds for k in kinds.values()):>9.2f}"
    )


if __name__ == "__main__":
    main()
