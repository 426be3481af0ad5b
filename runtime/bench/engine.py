"""Our engine under benchmark: `llmservice.LLM` driven through its public API only.

The benchmark sees exactly what a user sees (`LLM(...)`, `llm.generate(...)` with
`{"prompt_token_ids": ...}` prompts), as vLLM's `benchmark_throughput` drives `vllm.LLM`.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmservice.runtime.bench.measure import GenerationRun

if TYPE_CHECKING:
    from llmservice.runtime.llm import LLM

# More than this left allocated after an engine closed means it was not released.
_LEFT_ALLOCATED_WARNING_GIB = 1.0


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """The `LLM(...)` arguments a benchmark run passes (DESIGN.md section 2 names)."""

    model: str
    """A model folder or a `builtin:` name."""
    load_format: str
    """"dummy" (random weights, the benchmark default) or "auto"."""
    dtype: str
    """Weights and activations dtype ("bfloat16" for the fixed workloads)."""
    device: str
    """"cuda", "cpu" or "auto"."""
    seed: int
    """Seed of the engine (random weights with "dummy", sampling)."""
    max_model_len: int | None = None
    """Longest sequence; None lets the engine choose (the model's maximum)."""
    gpu_memory_utilization: float = 0.9
    """Fraction of GPU memory the engine may use (weights + KV cache + activations)."""
    max_num_seqs: int | None = None
    """Sequences per step at most; None lets the engine choose for the device."""
    max_num_batched_tokens: int | None = None
    """Tokens per step at most; None lets the engine choose for the device."""
    enable_prefix_caching: bool = True
    """Reuse the K/V of full prompt blocks that an earlier request computed."""

    def with_prefix_caching(self, enabled: bool) -> EngineOptions:
        """These options with prefix caching switched on or off."""
        return dataclasses.replace(self, enable_prefix_caching=enabled)

    def llm_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `LLM(...)`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class LLMServiceEngine:
    """`llmservice.LLM` as a `BenchEngine`; the constructor builds (and times) the `LLM`."""

    name = "llmservice"

    def __init__(self, options: EngineOptions) -> None:
        from llmservice.runtime.llm import LLM

        start = time.perf_counter()
        self._llm: LLM | None = LLM(**options.llm_kwargs())
        self.startup_s = time.perf_counter() - start
        self.options = options

    def generate(self, prompts: list[list[int]], output_len: int) -> GenerationRun:
        from llmservice.runtime.sampling_params import SamplingParams

        if self._llm is None:
            raise RuntimeError("the engine was closed")
        params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
        requests: list[Any] = [{"prompt_token_ids": prompt} for prompt in prompts]
        start = time.perf_counter()
        outputs = self._llm.generate(requests, params)
        elapsed = time.perf_counter() - start
        return GenerationRun.checked(
            elapsed,
            prompts,
            [list(out.outputs[0].token_ids) for out in outputs],
            output_len,
            self.name,
        )

    def details(self) -> dict[str, Any]:
        options = self.options
        return {
            "load_format": options.load_format,
            "dtype": options.dtype,
            "gpu_memory_utilization": options.gpu_memory_utilization,
            "max_model_len": options.max_model_len,
            "max_num_seqs": options.max_num_seqs,
            "max_num_batched_tokens": options.max_num_batched_tokens,
        }

    def close(self) -> None:
        # The last reference: the LLM's model and KV cache go with it.
        self._llm = None
        release_device_memory(self.name)


def release_device_memory(engine: str) -> None:
    """Collect garbage and hand cached CUDA memory back, so the next engine starts clean; warn
    when `engine` left memory allocated (something still references its tensors)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        left_gib = torch.cuda.memory_allocated() / 2**30
        if left_gib > _LEFT_ALLOCATED_WARNING_GIB:
            print(
                f"warning: {left_gib:.1f} GiB of CUDA memory still allocated after closing "
                f"{engine}: the next engine gets less",
                file=sys.stderr,
            )
