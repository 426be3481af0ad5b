"""The model runner: owns the model, the paged KV cache and the sampler; runs one step.

`execute` turns a `SchedulerOutput` into flat tensors (model_inputs.py), runs one forward pass
over the mixed batch of prefill chunks and decode tokens, and samples one token for every chunk
that reaches the end of its request's known tokens. Per-request sampling state (parameters, the
seeded generator) lives here from `add_request` until the scheduler reports the request gone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from llmservice.runtime import kv_cache
from llmservice.runtime.config import EngineConfig
from llmservice.runtime.kernel_ops import get_kernel_ops
from llmservice.runtime.model_inputs import ModelInputs, prepare_inputs
from llmservice.runtime.models.loader import load_model
from llmservice.runtime.outputs import TokenLogprobs
from llmservice.runtime.sampler import Sampler
from llmservice.runtime.sampling_metadata import SamplingMetadata, SamplingRow
from llmservice.runtime.sampling_params import SamplingParams
from llmservice.scheduler import Request, RequestLimits, ScheduledChunk, SchedulerOutput

# The profiling pass samples one token of a throw-away request.
_PROFILE_LIMITS = RequestLimits(max_tokens=1)


@dataclass(frozen=True, slots=True)
class RunnerOutput:
    """The tokens sampled in one step."""

    sampled_token_ids: dict[str, int]
    """Request id -> its new token (only chunks that sample)."""
    logprobs: dict[str, TokenLogprobs]
    """Request id -> the new token's logprobs (only requests that asked)."""


@dataclass(frozen=True, slots=True)
class _RequestState:
    params: SamplingParams
    generator: torch.Generator | None


class ModelRunner:
    """Loads the model, sizes and allocates the KV cache, and executes scheduled steps."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.device = config.device.device
        self.block_size = config.cache.block_size
        self.ops = get_kernel_ops(config.device.kernel_ops, self.device)
        self.model = load_model(
            config.model, config.load.load_format, self.ops, self.device, config.load.seed
        )
        self.num_blocks = self._determine_num_blocks()
        self.kv_caches = kv_cache.allocate_kv_caches(
            config.model, self.num_blocks, self.block_size, self.device
        )
        self.sampler = Sampler(torch.Generator(device=self.device).manual_seed(config.load.seed))
        self._requests: dict[str, _RequestState] = {}

    def add_request(self, request_id: str, params: SamplingParams) -> None:
        """Start tracking a request's sampling state (its own generator when seeded)."""
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        self._requests[request_id] = _RequestState(params, generator)

    def remove_requests(self, request_ids: tuple[str, ...] | list[str]) -> None:
        """Forget finished or aborted requests (unknown ids are ignored)."""
        for request_id in request_ids:
            self._requests.pop(request_id, None)

    @torch.inference_mode()
    def execute(
        self, output: SchedulerOutput, get_request: Callable[[str], Request | None]
    ) -> RunnerOutput:
        """Run the forward pass of `output` and sample; the scheduler has already advanced
        every chunk's request past the chunk (num_computed_tokens)."""
        self.remove_requests(output.finished_ids)
        if not output.chunks:
            return RunnerOutput({}, {})
        requests = [_known(get_request, chunk) for chunk in output.chunks]
        inputs = prepare_inputs(output.chunks, requests, self.block_size, self.device)
        logits = self._compute_logits(inputs)  # (num_sampled, vocab)
        if not inputs.sampled_request_ids:
            return RunnerOutput({}, {})
        by_id = {request.request_id: request for request in requests}
        rows = [
            SamplingRow(self._requests[rid].params, by_id[rid], self._requests[rid].generator)
            for rid in inputs.sampled_request_ids
        ]
        sampled = self.sampler(logits, SamplingMetadata.build(rows, self.device))
        ids = inputs.sampled_request_ids
        return RunnerOutput(
            sampled_token_ids=dict(zip(ids, sampled.token_ids, strict=True)),
            logprobs={
                rid: lp for rid, lp in zip(ids, sampled.logprobs, strict=True) if lp is not None
            },
        )

    def _compute_logits(self, inputs: ModelInputs) -> torch.Tensor:
        hidden = self.model(
            inputs.input_ids, inputs.positions, self.kv_caches, inputs.attn_metadata
        )  # (num_tokens, hidden)
        return self.model.compute_logits(hidden[inputs.logits_indices])

    def _determine_num_blocks(self) -> int:
        cache, model = self.config.cache, self.config.model
        # NOTE: the scheduler refuses a pool too small for one sequence of max_model_len.
        if cache.num_blocks_override is not None:
            return cache.num_blocks_override
        if self.device.type == "cuda":
            self._profile_forward()
            return kv_cache.cuda_num_blocks(
                model, self.block_size, self.device, cache.gpu_memory_utilization
            )
        return kv_cache.cpu_num_blocks(model, self.block_size, self.config.scheduler.max_num_seqs)

    def _profile_forward(self) -> None:
        """One forward pass at the largest token budget, so the memory peak includes activations."""
        num_tokens = min(
            self.config.scheduler.max_num_batched_tokens, self.config.model.max_model_len
        )
        num_blocks = -(-num_tokens // self.block_size) + 1
        caches = kv_cache.allocate_kv_caches(
            self.config.model, num_blocks, self.block_size, self.device
        )
        chunk = ScheduledChunk(
            request_id="profile",
            num_computed_tokens=0,
            num_new_tokens=num_tokens,
            block_ids=tuple(range(1, num_blocks)),
            samples=True,
        )
        request = Request(
            request_id="profile",
            prompt_token_ids=[0] * num_tokens,
            limits=_PROFILE_LIMITS,
            arrival_time=0.0,
        )
        inputs = prepare_inputs([chunk], [request], self.block_size, self.device)
        with torch.inference_mode():
            hidden = self.model(inputs.input_ids, inputs.positions, caches, inputs.attn_metadata)
            self.model.compute_logits(hidden[inputs.logits_indices])
        torch.cuda.synchronize(self.device)
        del caches


def _known(get_request: Callable[[str], Request | None], chunk: ScheduledChunk) -> Request:
    request = get_request(chunk.request_id)
    if request is None:
        raise RuntimeError(f"scheduled request {chunk.request_id!r} is unknown to the scheduler")
    return request
