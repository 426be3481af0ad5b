"""The peer engine: HuggingFace transformers' own continuous batching, on the same workload.

transformers 5.x serves a batch of token-id prompts with a paged KV cache and continuous
batching through `model.generate_batch`, which is a thin loop around
`model.continuous_batching_context_manager(...)`. We enter that context manager ourselves so
that its set-up (KV cache allocation, CUDA-graph warm-up) is timed apart (`batch_setup_s`), as
our `LLM(...)` start-up is, and only the requests themselves are timed, like our `llm.generate`.

The model is built from the same `config.json` with random weights (as our `load_format="dummy"`)
directly on the device. The attention implementation is switched to transformers' paged variant
of the one asked for (`sdpa` -> `paged|sdpa`) by transformers itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from llmservice.runtime.bench.engine import release_device_memory
from llmservice.runtime.bench.measure import BenchmarkError, GenerationRun
from llmservice.runtime.bench.progress import ProgressBar
from llmservice.runtime.model_config import parse_dtype

# transformers' CPU path sizes its KV cache from psutil's view of host memory and has no GPU
# heuristics to fall back on, so on the CPU the pool is sized from the workload instead.
_CPU_MAX_BATCH_TOKENS = 512
# Seconds to wait for one result before checking that the generation thread is still alive.
_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class PeerOptions:
    """How the transformers peer is set up."""

    attn_implementation: str = "sdpa"
    """transformers attention implementation; continuous batching runs its `paged|` variant."""
    num_blocks: int | None = None
    """KV cache blocks; None lets transformers size the cache from free GPU memory."""
    max_batch_tokens: int | None = None
    """Tokens per step at most; None lets transformers choose."""
    block_size: int = 256
    """Tokens per KV cache block (transformers' default)."""
    compile_level: int = 0
    """transformers' `default_compile_level` (0: eager, 1-3: torch.compile, slower warm-up)."""
    prefix_sharing: bool = True
    """Share the KV blocks of common prompt prefixes (transformers' `allow_block_sharing`)."""
    timeout_s: float | None = None
    """Give up on a batch (BenchmarkError) after this many seconds; None waits as long as it
    takes. Bounds the peer so a command under a time limit still prints our own line."""


class TransformersPeer:
    """transformers' continuous batching as a `BenchEngine`; the constructor builds the model."""

    name = "transformers"

    def __init__(
        self, model: str, dtype: str, device: str, seed: int, options: PeerOptions
    ) -> None:
        import torch
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM

        # transformers is untyped: its classes are used through Any.
        auto_model: Any = AutoModelForCausalLM

        self.options = options
        self.device = device
        self.dtype = dtype
        self.version = transformers.__version__
        start = time.perf_counter()
        config = AutoConfig.from_pretrained(model)
        torch.manual_seed(seed)
        with torch.device(device):
            self._model: Any = auto_model.from_config(
                config,
                dtype=parse_dtype(dtype),
                attn_implementation=options.attn_implementation,
            )
        self._model.eval()
        self.startup_s = time.perf_counter() - start
        # Seconds the last `generate` spent setting up its manager (cache, warm-up), untimed.
        self.setup_s = 0.0
        self.attn_used = f"paged|{options.attn_implementation}"
        self.num_blocks_used: int | None = options.num_blocks
        self.max_batch_tokens_used: int | None = options.max_batch_tokens
        self.cuda_graphs: Any = None

    def generate(self, prompts: list[list[int]], output_len: int) -> GenerationRun:
        from transformers import GenerationConfig
        from transformers.generation.continuous_batching.utils import WorkloadHints

        make_generation_config: Any = GenerationConfig  # untyped, as above
        if self._model is None:
            raise RuntimeError("the peer was closed")
        # eos_token_id=-1 matches no token: every request runs to max_new_tokens (ignore_eos).
        generation_config = make_generation_config(
            max_new_tokens=output_len, do_sample=False, eos_token_id=-1, pad_token_id=0
        )
        hints = WorkloadHints(
            max_prompt_length=max(len(p) for p in prompts),
            max_generated_length=output_len,
            num_requests=len(prompts),
        )
        setup_start = time.perf_counter()
        with self._model.continuous_batching_context_manager(
            generation_config=generation_config,
            continuous_batching_config=self._batching_config(prompts, output_len),
            block=True,
            timeout=5,
            workload_hints=hints,
        ) as manager:
            self.setup_s = time.perf_counter() - setup_start
            # transformers picks the paged variant (and may prefer flash attention): record
            # what actually ran.
            self.attn_used = str(self._model.config._attn_implementation)
            self._record_sizes(manager)
            start = time.perf_counter()
            request_ids = manager.add_requests(inputs=prompts, max_new_tokens=output_len)
            results = self._collect(manager, set(request_ids))
            elapsed = time.perf_counter() - start
        outputs = [results[request_id].generated_tokens for request_id in request_ids]
        return GenerationRun.checked(elapsed, prompts, outputs, output_len, self.name)

    def details(self) -> dict[str, Any]:
        options = self.options
        return {
            "transformers_version": self.version,
            "attn_implementation": self.attn_used,
            "dtype": self.dtype,
            "block_size": options.block_size,
            "num_blocks": self.num_blocks_used,
            "max_batch_tokens": self.max_batch_tokens_used,
            "cuda_graphs": self.cuda_graphs,
            "compile_level": options.compile_level,
            "batch_setup_s": round(self.setup_s, 2),
        }

    def close(self) -> None:
        self._model = None
        release_device_memory(self.name)

    def _record_sizes(self, manager: Any) -> None:
        # The sizes transformers resolved (from free memory when not given), for the line.
        processor = getattr(manager, "batch_processor", None)
        cache = getattr(processor, "cache", None)
        self.num_blocks_used = getattr(cache, "num_blocks", None)
        self.max_batch_tokens_used = getattr(cache, "max_batch_tokens", None)
        config = getattr(processor, "cb_config", None)
        self.cuda_graphs = getattr(config, "use_cuda_graph", None)

    def _collect(self, manager: Any, pending: set[str]) -> dict[str, Any]:
        results: dict[str, Any] = {}
        timeout_s = self.options.timeout_s
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with ProgressBar(f"{self.name} requests", len(pending)) as bar:
            while pending:
                if deadline is not None and time.monotonic() > deadline:
                    # Leaving the context manager stops transformers' generation thread.
                    raise BenchmarkError(
                        f"transformers did not finish within --peer-timeout-s {timeout_s:g} "
                        f"({bar.done} of {bar.total} requests done)"
                    )
                result = manager.get_result(timeout=_POLL_S)
                if result is None:
                    if not manager.is_running():
                        raise BenchmarkError(
                            f"transformers' generation thread stopped with {len(pending)} "
                            "requests unfinished (see its log above)"
                        )
                    continue
                if not result.is_finished() or result.request_id not in pending:
                    continue
                if result.error is not None:
                    raise BenchmarkError(
                        f"transformers request {result.request_id} failed: {result.error}"
                    )
                pending.discard(result.request_id)
                results[result.request_id] = result
                bar.update()
        return results

    def _batching_config(self, prompts: list[list[int]], output_len: int) -> Any:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        options = self.options
        num_blocks, max_batch_tokens = options.num_blocks, options.max_batch_tokens
        if not self.device.startswith("cuda"):
            blocks_per_request = math.ceil(
                (max(map(len, prompts)) + output_len) / options.block_size
            )
            num_blocks = num_blocks or len(prompts) * blocks_per_request + 2
            max_batch_tokens = max_batch_tokens or _CPU_MAX_BATCH_TOKENS
        return ContinuousBatchingConfig(
            block_size=options.block_size,
            num_blocks=num_blocks,
            max_batch_tokens=max_batch_tokens,
            default_compile_level=options.compile_level,
            allow_block_sharing=options.prefix_sharing,
            seed=0,
        )
