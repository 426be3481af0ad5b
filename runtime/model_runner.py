"""The model runner: owns the model, the paged KV cache and the sampler; runs one step.

`execute` turns a `SchedulerOutput` into flat tensors (model_inputs.py), runs one forward pass
over the mixed batch of prefill chunks and decode tokens, and samples one token for every chunk
that reaches the end of its request's known tokens. On CUDA, pure-decode steps replay a captured graph
(cuda_graphs.py) and mixed steps run eagerly. `launch` is the async form of a step: it queues
the forward pass and the sampling on the device and returns a `LaunchedStep` whose tokens (and
logprobs) reach the host later (non-blocking copies into pinned memory and an event), so the
engine can schedule the next step meanwhile; placeholder rows of that next step are fed from
`LaunchedStep.tokens` on the device. Per-request sampling state (parameters, the
seeded generator) lives here from `add_request` until the scheduler reports the request gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from llmservice.runtime import kv_cache, model_inputs
from llmservice.runtime.config import EngineConfig
from llmservice.runtime.cuda_graphs import DecodeGraphs, capture_sizes
from llmservice.runtime.kernel_ops import get_kernel_ops
from llmservice.runtime.model_inputs import (
    HostInputs,
    prepare_host_inputs,
    prepare_inputs,
    staged,
)
from llmservice.runtime.models.loader import load_model
from llmservice.runtime.outputs import TokenLogprobs
from llmservice.runtime.sampler import (
    LogprobTensors,
    SampledTensors,
    Sampler,
    logprob_tensors,
)
from llmservice.runtime.sampling_metadata import SamplingMetadata, SamplingRow
from llmservice.runtime.sampling_params import SamplingParams
from llmservice.runtime.warmup import warm_up, warm_up_logits
from llmservice.scheduler import Request, RequestLimits, ScheduledChunk, SchedulerOutput

logger = logging.getLogger(__name__)

# Prompt logprobs are computed this many positions at a time (their float32 logits).
_PROMPT_LOGPROB_ROWS = 256
# The profiling pass samples one token of a throw-away request.
_PROFILE_LIMITS = RequestLimits(max_tokens=1)


@dataclass(frozen=True, slots=True)
class RunnerOutput:
    """The tokens sampled in one step."""

    sampled_token_ids: dict[str, int]
    """Request id -> its new token (only chunks that sample)."""
    logprobs: dict[str, TokenLogprobs]
    """Request id -> the new token's logprobs (only requests that asked)."""
    prompt_logprobs: dict[str, dict[int, TokenLogprobs]] = field(default_factory=dict)
    """Request id -> prompt position p -> the logprobs of prompt token p + 1 (`prompt_logprobs`
    requests whose prompt this step computed)."""


class LaunchedStep:
    """A launched step: its sampled tokens (and logprobs) on the device, on their way to the
    host."""

    def __init__(
        self,
        request_ids: tuple[str, ...],
        sampled: SampledTensors | None,
        prompt_logprobs: dict[str, dict[int, TokenLogprobs]] | None = None,
    ) -> None:
        self.request_ids = request_ids
        """The request of each sampled row."""
        self._prompt_logprobs = prompt_logprobs or {}
        self.tokens = None if sampled is None else sampled.tokens
        """(num_sampled,) int64 on the device (None: nothing sampled)."""
        self._sampled = sampled
        self._rows: dict[str, int] | None = None
        self._host: list[torch.Tensor] = []
        self._event: torch.cuda.Event | None = None
        if sampled is None:
            return
        device_tensors = [sampled.tokens]
        if sampled.logprobs is not None:
            device_tensors += sampled.logprobs.tensors()
        if sampled.tokens.is_cuda:
            for tensor in device_tensors:
                host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                self._host.append(host.copy_(tensor, non_blocking=True))
            self._event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            self._event.record()
        else:
            self._host = device_tensors

    def row_of(self, request_id: str) -> int:
        """The row of a request's sampled token; RuntimeError if it sampled none."""
        if self._rows is None:
            self._rows = {rid: row for row, rid in enumerate(self.request_ids)}
        row = self._rows.get(request_id)
        if row is None:
            raise RuntimeError(
                f"request {request_id!r} has a placeholder but sampled nothing in the previous step"
            )
        return row

    def result(self) -> RunnerOutput:
        """Wait for the tokens (and logprobs) on the host."""
        if self._sampled is None:
            return RunnerOutput({}, {}, self._prompt_logprobs)
        if self._event is not None:
            self._event.synchronize()
        tokens: list[int] = self._host[0].tolist()
        sampled = dict(zip(self.request_ids, tokens, strict=True))
        if self._sampled.logprobs is None:
            return RunnerOutput(sampled, {}, self._prompt_logprobs)
        rows = LogprobTensors.of(self._host[1:]).rows(tokens, self._sampled.num_logprobs)
        logprobs = {
            rid: lp for rid, lp in zip(self.request_ids, rows, strict=True) if lp is not None
        }
        return RunnerOutput(sampled, logprobs, self._prompt_logprobs)


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
        # Block 0 is the null block: it never holds a request's tokens.
        self.kv_capacity_tokens = (self.num_blocks - 1) * self.block_size
        logger.info(
            "KV cache: %d blocks of %d tokens = %d tokens (kernels %s)",
            self.num_blocks,
            self.block_size,
            self.kv_capacity_tokens,
            self.ops.name,
        )
        self.sampler = Sampler(torch.Generator(device=self.device).manual_seed(config.load.seed))
        self._requests: dict[str, _RequestState] = {}
        self.graphs: DecodeGraphs | None = None
        self.graph_capture_s = 0.0
        if self.device.type == "cuda" and not config.device.enforce_eager:
            self._capture_graphs()
        self.logits_buckets: list[int] = []
        """Row counts the logits are padded to (ascending; empty: no padding)."""
        self.warmup_s = 0.0
        if self.device.type == "cuda":
            start = time.perf_counter()
            # The lm_head runs at a few padded row counts (`_logits`), each loaded here.
            self.logits_buckets = capture_sizes(config.scheduler.max_num_seqs)
            warm_up_logits(
                self.model.compute_logits,
                self.logits_buckets,
                config.model.hidden_size,
                config.model.dtype,
                self.device,
            )
            warm_up(
                self._compute_logits, self.block_size, self.num_blocks, config.model.max_model_len
            )
            self.warmup_s = time.perf_counter() - start
            logger.info("warm-up steps (kernel compilation) took %.1f s", self.warmup_s)

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
        return self.launch(output, get_request, None).result()

    @torch.inference_mode()
    def launch(
        self,
        output: SchedulerOutput,
        get_request: Callable[[str], Request | None],
        previous: LaunchedStep | None,
    ) -> LaunchedStep:
        """Queue the forward pass and sampling of `output` without waiting for the tokens.

        A placeholder row of a request takes its token from `previous`, on the device, and so
        do the penalties and the min_tokens count of its sampled row.
        """
        self.remove_requests(output.finished_ids)
        if not output.chunks:
            return LaunchedStep((), None)
        requests = [_known(get_request, chunk) for chunk in output.chunks]
        host = prepare_host_inputs(output.chunks, requests, self.block_size)
        feed = None
        if host.fed_rows:
            if previous is None or previous.tokens is None:
                raise RuntimeError("placeholder rows without a previous step to feed them")
            # (2, num_fed): destination rows, then source rows of previous.tokens.
            index = staged(
                torch.tensor(
                    [host.fed_rows, [previous.row_of(rid) for rid in host.fed_request_ids]],
                    dtype=torch.int64,
                ),
                self.device,
            )
            feed = (index[0], previous.tokens.index_select(0, index[1]))
        prompt_jobs = self._prompt_logprob_jobs(output.chunks, requests)
        logits, hidden = self._forward(host, feed, keep_hidden=bool(prompt_jobs))
        prompt_logprobs = {}
        if hidden is not None:
            # Synchronous (the values are read here): only steps that compute such prompts.
            prompt_logprobs = self._prompt_logprobs(hidden, host, prompt_jobs)
        ids = host.sampled_request_ids
        if not ids:
            return LaunchedStep((), None, prompt_logprobs)
        by_id = {request.request_id: request for request in requests}
        fed = set(host.fed_request_ids)  # their previous token is still on the device
        rows = [
            SamplingRow(
                self._requests[rid].params, by_id[rid], self._requests[rid].generator, rid in fed
            )
            for rid in ids
        ]
        if _all_plain_greedy(rows):
            # One argmax on the device and one copy of the ids: no per-step metadata tensors.
            return LaunchedStep(
                ids, SampledTensors(logits.argmax(dim=-1), None, []), prompt_logprobs
            )
        pending = None
        if (
            previous is not None
            and previous.tokens is not None
            and any(r.pending and _penalised(r.params) for r in rows)
        ):
            # Penalties count the token of the step in flight too: its value, on the device.
            source = [previous.row_of(rid) if rid in fed else -1 for rid in ids]
            index = staged(torch.tensor(source, dtype=torch.int64), self.device)
            pending = torch.where(
                index >= 0, previous.tokens.index_select(0, index.clamp(min=0)), -1
            )  # (num_sampled,)
        meta = SamplingMetadata.build(rows, self.device, pending)
        return LaunchedStep(ids, self.sampler.sample(logits, meta), prompt_logprobs)

    def _compute_logits(
        self, host: HostInputs, feed: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return self._forward(host, feed)[0]

    def _forward(
        self,
        host: HostInputs,
        feed: tuple[torch.Tensor, torch.Tensor] | None = None,
        keep_hidden: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The logits of the sampled rows, and (keep_hidden: eager) every row's hidden state."""
        num_seqs = len(host.seq_lens)
        cascade = host.cascade_prefix_blocks > 0
        if (
            self.graphs is not None
            and not keep_hidden
            and host.is_pure_decode
            and self.graphs.graph_size(num_seqs, cascade) is not None
        ):
            hidden = self.graphs.run(
                host.input_ids,
                host.positions,
                host.slot_mapping,
                host.seq_lens,
                host.block_tables,
                feed,
                (host.cascade_prefix_blocks, host.cascade_prefix_row) if cascade else None,
            )  # (num_seqs, hidden): every sequence samples
            return self._logits(hidden), None
        inputs = host.to_device(self.device)
        if feed is not None:
            inputs.input_ids.index_copy_(0, feed[0], feed[1])
        hidden = self.model(
            inputs.input_ids, inputs.positions, self.kv_caches, inputs.attn_metadata
        )  # (num_tokens, hidden)
        return self._logits(hidden[inputs.logits_indices]), hidden if keep_hidden else None

    def _prompt_logprob_jobs(
        self, chunks: Sequence[ScheduledChunk], requests: Sequence[Request]
    ) -> list[tuple[int, int, int, Request]]:
        """(chunk index, first position, end position, request) of the prompt positions whose
        next token is a prompt token, for requests that asked for prompt logprobs."""
        jobs = []
        for index, (chunk, request) in enumerate(zip(chunks, requests, strict=True)):
            state = self._requests.get(chunk.request_id)
            if state is None or state.params.prompt_logprobs is None:
                continue
            if request.num_output_tokens > 0:
                continue  # delivered with the first token (a later recompute changes nothing)
            start = chunk.num_computed_tokens  # the chunk's first position
            end = min(start + chunk.num_new_tokens, request.num_prompt_tokens - 1)
            if start < end:
                jobs.append((index, start, end, request))
        return jobs

    def _prompt_logprobs(
        self,
        hidden: torch.Tensor,  # (num_tokens, hidden) of the whole step
        host: HostInputs,
        jobs: list[tuple[int, int, int, Request]],
    ) -> dict[str, dict[int, TokenLogprobs]]:
        result: dict[str, dict[int, TokenLogprobs]] = {}
        for index, start, end, request in jobs:
            row_of_start = int(host.query_start_loc[index])  # the chunk's first row
            num_top = self._requests[request.request_id].params.prompt_logprobs or 0
            by_position = result.setdefault(request.request_id, {})
            # Slices bound the float32 logits of a long chunk (rows x vocabulary).
            for lo in range(start, end, _PROMPT_LOGPROB_ROWS):
                hi = min(lo + _PROMPT_LOGPROB_ROWS, end)
                rows = hidden[row_of_start + lo - start : row_of_start + hi - start]
                logprobs = torch.log_softmax(self._logits(rows), dim=-1)
                next_tokens = request.prompt_token_ids[lo + 1 : hi + 1]
                targets = torch.tensor(next_tokens, device=logprobs.device)
                asked: list[int | None] = [num_top] * (hi - lo)
                entries = logprob_tensors(logprobs, targets, asked).rows(next_tokens, asked)
                by_position.update(
                    (p, e) for p, e in zip(range(lo, hi), entries, strict=True) if e is not None
                )
        return result

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(rows, hidden) -> (rows, vocab) float32 logits, computed over the rows padded to a
        bucket (so the lm_head only meets row counts loaded at start-up)."""
        rows = hidden.shape[0]
        bucket = next((b for b in self.logits_buckets if b >= rows), rows)
        if bucket == rows:
            return self.model.compute_logits(hidden)
        padded = torch.nn.functional.pad(hidden, (0, 0, 0, bucket - rows))  # (bucket, hidden)
        return self.model.compute_logits(padded)[:rows]

    def _capture_graphs(self) -> None:
        start = time.perf_counter()
        scheduler = self.config.scheduler
        self.graphs = DecodeGraphs(
            self.model,
            self.kv_caches,
            min(scheduler.max_num_seqs, self.config.device.max_cuda_graph_batch_size),
            self.config.model.max_model_len,
            self.block_size,
            self.device,
            # The reference kernels read the prefix on the host, which a graph cannot replay.
            cascade_min_seqs=model_inputs.CASCADE_POLICY.min_seqs
            if self.ops.name != "reference"
            else None,
        )
        self.graphs.capture()
        self.graph_capture_s = time.perf_counter() - start
        logger.info(
            "captured %d decode CUDA graphs (batch sizes up to %d) in %.1f s",
            len(self.graphs.sizes) + len(self.graphs.cascade_sizes),
            self.graphs.max_batch_size,
            self.graph_capture_s,
        )

    def _determine_num_blocks(self) -> int:
        cache, model = self.config.cache, self.config.model
        # NOTE: the scheduler refuses a pool too small for one sequence of max_model_len.
        if cache.num_blocks_override is not None:
            return cache.num_blocks_override
        if self.device.type == "cuda":
            profile_cache_bytes = self._profile_forward()
            return kv_cache.cuda_num_blocks(
                model,
                self.block_size,
                self.device,
                cache.gpu_memory_utilization,
                excluded_bytes=profile_cache_bytes,
            )
        return kv_cache.cpu_num_blocks(model, self.block_size, self.config.scheduler.max_num_seqs)

    def _profile_forward(self) -> int:
        """One forward pass at the largest token budget, so the memory peak includes activations;
        returns the bytes of the pass's own KV cache (not part of the steady-state peak)."""
        num_tokens = min(
            self.config.scheduler.max_num_batched_tokens, self.config.model.max_model_len
        )
        num_blocks = -(-num_tokens // self.block_size) + 1
        # The peak must be this engine's: the weights (allocated now) plus this pass.
        torch.cuda.reset_peak_memory_stats(self.device)
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
        # A step samples up to max_num_seqs rows: their float32 logits count in the peak too.
        logits_rows = min(self.config.scheduler.max_num_seqs, num_tokens)
        with torch.inference_mode():
            hidden = self.model(inputs.input_ids, inputs.positions, caches, inputs.attn_metadata)
            logits = self.model.compute_logits(hidden[:logits_rows])
            logits.argmax(dim=-1)
            del hidden, logits
        torch.cuda.synchronize(self.device)
        cache_bytes = sum(c.numel() * c.element_size() for c in caches)
        del caches
        torch.cuda.empty_cache()
        return cache_bytes


def _penalised(params: SamplingParams) -> bool:
    """Whether the request's logits depend on the tokens it generated."""
    return (
        params.repetition_penalty != 1.0
        or params.presence_penalty != 0.0
        or params.frequency_penalty != 0.0
    )


def _argmax_suffices(params: SamplingParams) -> bool:
    """Greedy with nothing to bias, penalise or report."""
    return (
        params.is_greedy
        and params.logprobs is None
        and not params.logit_bias_items
        and not _penalised(params)
    )


def _all_plain_greedy(rows: Sequence[SamplingRow]) -> bool:
    """Whether every row is greedy with nothing to mask, penalise or report (argmax suffices)."""
    return all(_argmax_suffices(row.params) and not row.bans_stop_tokens for row in rows)


def _known(get_request: Callable[[str], Request | None], chunk: ScheduledChunk) -> Request:
    request = get_request(chunk.request_id)
    if request is None:
        raise RuntimeError(f"scheduled request {chunk.request_id!r} is unknown to the scheduler")
    return request
