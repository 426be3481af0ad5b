"""`EngineCore`: the token-level engine loop (scheduler + model runner + sampler).

`step()` is one schedule -> execute -> update. The core knows tokens only: text, stop strings
and n > 1 fan-in live in the `OutputProcessor`. `LLM` runs a core in-process; the HTTP server
runs the same core in its own process, so its requests and outputs are plain picklable
dataclasses.

On CUDA the loop is overlapped (async scheduling, as vLLM v1's): while the device runs step N,
`step()` schedules step N+1 with placeholders for the tokens of N, queues it behind N (its
placeholder rows are fed from N's sampled tokens on the device), and only then waits for N's
tokens, appends them and checks stops. A request that stopped on a stop token at N had one extra
token computed at N+1, which is dropped (one at its length limit gets none: the scheduler knows);
aborts (stop strings) land one step late. Every kind of request runs
ahead of its tokens: sampling, logprobs, penalties and min_tokens read the token in flight on
the device (model_runner.py). The CPU path is synchronous unless `async_scheduling` is set.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from llmservice.kvcache import KVCacheManager
from llmservice.runtime.config import EngineConfig
from llmservice.runtime.model_config import ModelConfig
from llmservice.runtime.model_runner import LaunchedStep, ModelRunner, RunnerOutput
from llmservice.runtime.outputs import TokenLogprobs
from llmservice.runtime.sampling_params import SamplingParams
from llmservice.scheduler import (
    Request,
    RequestLimits,
    RequestStatus,
    Scheduler,
    SchedulerOutput,
    SchedulerStats,
)


@dataclass(slots=True)
class EngineCoreRequest:
    """One sequence to generate (an n > 1 request is n of these, ids "<id>-<i>")."""

    request_id: str
    """Unique among unfinished requests."""
    prompt_token_ids: list[int]
    """The prompt, tokenized."""
    sampling_params: SamplingParams
    """How to decode (n is ignored here: the front end fans out)."""
    priority: int = 0
    """Lower is served first under the "priority" policy."""
    arrival_time: float = field(default_factory=time.monotonic)
    """time.monotonic() when the request arrived (FCFS order)."""
    prefix_leader: str | None = None
    """With prefix caching, wait until this request's prompt is computed, then start from its
    cached blocks (the samples of an n > 1 request share the prompt this way)."""


@dataclass(slots=True)
class EngineCoreOutput:
    """What one step produced for one request."""

    request_id: str
    """The core request id."""
    new_token_ids: list[int]
    """Tokens generated in this step."""
    new_logprobs: list[TokenLogprobs] | None = None
    """One per new token when the request asked for logprobs."""
    finish_reason: str | None = None
    """"stop", "length" or "abort" once the request is over."""
    stop_reason: int | str | None = None
    """The stop token id that ended it (None for EOS and length)."""
    num_cached_tokens: int = 0
    """Prompt tokens served from the prefix cache."""
    prompt_logprobs: list[TokenLogprobs] | None = None
    """With the first token of a request that asked: prompt tokens 1.. with their logprobs."""

    @property
    def finished(self) -> bool:
        """Whether the request is over."""
        return self.finish_reason is not None


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot for metrics."""

    scheduler: SchedulerStats
    """Queue lengths, KV usage, preemptions, prefix-cache counters."""
    prompt_tokens_total: int
    """Prompt tokens of requests that produced their first token, since start."""
    generation_tokens_total: int
    """Generated tokens since start."""


class EngineCore:
    """Owns the scheduler and the model runner; every method is called from one thread."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.model_runner = ModelRunner(config)
        kv_cache = KVCacheManager(
            self.model_runner.num_blocks,
            config.cache.block_size,
            config.cache.enable_prefix_caching,
        )
        self.scheduler = Scheduler(config.scheduler, kv_cache)
        self._params: dict[str, SamplingParams] = {}
        # Requests waiting for their prefix leader's prompt to be computed (by leader id).
        self._deferred: dict[str, list[Request]] = {}
        # Prompt logprobs by request, by position, until they leave with the first token.
        self._prompt_logprobs: dict[str, dict[int, TokenLogprobs]] = {}
        self._prompt_tokens_total = 0
        self._generation_tokens_total = 0
        self.async_scheduling = self.model_runner.device.type == "cuda"
        """Overlap the host work of step N+1 with step N on the device (default on CUDA)."""
        # The launched step whose tokens are not applied yet.
        self._in_flight: tuple[SchedulerOutput, LaunchedStep] | None = None

    @property
    def model_config(self) -> ModelConfig:
        """The served model's configuration (vocab size, EOS ids, max_model_len...)."""
        return self.config.model

    @property
    def max_model_len(self) -> int:
        """Prompt plus output tokens of one request at most."""
        return self.config.model.max_model_len

    def add_request(self, request: EngineCoreRequest) -> None:
        """Queue a request; ValueError (naming the problem) if it can never run."""
        # NOTE: everything the scheduler would reject is checked here, so a request deferred
        # behind its prefix leader cannot fail later, inside step().
        if not isinstance(request.request_id, str) or not request.request_id:
            raise ValueError(f"request_id must be a non-empty str, got {request.request_id!r}")
        prompt = request.prompt_token_ids
        vocab = self.config.model.vocab_size
        # NOTE: the element types as one set and the range by min/max: C loops, twice as fast
        # as a per-id generator (W3's 819K prompt ids took 0.15 s of its timed run that way).
        if not (
            isinstance(prompt, list)
            and set(map(type, prompt)) <= {int}
            and (not prompt or (min(prompt) >= 0 and max(prompt) < vocab))
        ):
            raise ValueError(
                f"request {request.request_id!r}: prompt_token_ids must be a list of token ids "
                f"in [0, {vocab})"
            )
        if not prompt:
            raise ValueError(f"request {request.request_id!r} has an empty prompt")
        if len(prompt) >= self.max_model_len:
            raise ValueError(
                f"request {request.request_id!r}: the prompt has {len(prompt)} tokens, more "
                f"than max_model_len={self.max_model_len} allows (it must leave room for one "
                "output token)"
            )
        if request.request_id in self._params:
            raise ValueError(f"request {request.request_id!r} is already in the engine")
        params = request.sampling_params
        # The sampler indexes the logits with these token ids.
        for name, ids in (
            ("stop_token_ids", params.stop_token_id_set),
            ("logit_bias", (t for t, _ in params.logit_bias_items)),
        ):
            bad = next((t for t in ids if t >= vocab), None)
            if bad is not None:
                raise ValueError(
                    f"request {request.request_id!r}: {name} holds {bad}, outside the "
                    f"vocabulary [0, {vocab})"
                )
        room = max(self.max_model_len - len(prompt), 1)
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        stop_ids = set(params.stop_token_id_set)
        if not params.ignore_eos:
            stop_ids.update(self.config.model.eos_token_ids)
        limits = RequestLimits(
            max_tokens=max_tokens,
            min_tokens=min(params.min_tokens, max_tokens),
            stop_token_ids=frozenset(stop_ids),
            reuse_cached_prefix=params.prompt_logprobs is None,
        )
        core_request = Request(
            request.request_id,
            prompt,
            limits,
            priority=request.priority,
            arrival_time=request.arrival_time,
        )
        leader = request.prefix_leader
        if leader is not None and self._should_defer(leader, len(prompt)):
            self._deferred.setdefault(leader, []).append(core_request)
        else:
            self.scheduler.add_request(core_request)
        self.model_runner.add_request(request.request_id, params)
        self._params[request.request_id] = params

    def abort_requests(self, request_ids: Iterable[str]) -> None:
        """Stop requests and free their KV blocks; unknown or finished ids are ignored."""
        ids = {request_ids} if isinstance(request_ids, str) else set(request_ids)
        for leader, waiting in list(self._deferred.items()):
            self._deferred[leader] = [r for r in waiting if r.request_id not in ids]
        for request_id in ids:
            self._params.pop(request_id, None)
            self._prompt_logprobs.pop(request_id, None)
        self.scheduler.finish_requests(ids, RequestStatus.FINISHED_ABORTED)
        self.model_runner.remove_requests(list(ids))

    def has_unfinished_requests(self) -> bool:
        """Whether any request is waiting or running (or a step is still in flight)."""
        return (
            self.scheduler.has_unfinished_requests()
            or any(self._deferred.values())
            or self._in_flight is not None
        )

    def step(self) -> list[EngineCoreOutput]:
        """One schedule -> execute -> update; the outputs of requests that got a token.

        Overlapped: launch the next step, then apply the one in flight (whose outputs these are).
        """
        self._release_deferred()
        if not self.async_scheduling and self._in_flight is None:
            if not self.scheduler.has_unfinished_requests():
                return []
            scheduled = self.scheduler.schedule()
            result = self.model_runner.execute(scheduled, self.scheduler.get_request)
            finished = self.scheduler.update(scheduled, result.sampled_token_ids)
            return self._make_outputs(result, finished)
        in_flight, self._in_flight = self._in_flight, None
        if self.async_scheduling and self.scheduler.has_unfinished_requests():
            scheduled = self.scheduler.schedule(async_output=True)
            previous = None if in_flight is None else in_flight[1]
            launched = self.model_runner.launch(scheduled, self.scheduler.get_request, previous)
            self._in_flight = (scheduled, launched)
        if in_flight is None:
            return []
        result = in_flight[1].result()
        finished = self.scheduler.update(in_flight[0], result.sampled_token_ids)
        return self._make_outputs(result, finished)

    def stats(self) -> EngineStats:
        """Scheduler statistics plus token totals."""
        return EngineStats(
            scheduler=self.scheduler.stats(),
            prompt_tokens_total=self._prompt_tokens_total,
            generation_tokens_total=self._generation_tokens_total,
        )

    def _should_defer(self, leader: str, prompt_len: int) -> bool:
        """Wait for the leader only if its cached prompt blocks could be shared."""
        return (
            self.config.cache.enable_prefix_caching
            and prompt_len > self.config.cache.block_size
            and self.scheduler.get_request(leader) is not None
        )

    def _release_deferred(self) -> None:
        """Queue the requests whose leader has computed its prompt (or is gone)."""
        for leader_id in list(self._deferred):
            leader = self.scheduler.get_request(leader_id)
            # NOTE: its first token marks the prompt's blocks cached (scheduled is not enough
            # when steps overlap: the blocks are cached at update time).
            if leader is not None and (
                leader.num_computed_tokens < leader.num_prompt_tokens
                or leader.num_output_tokens == 0
            ):
                continue
            for request in self._deferred.pop(leader_id):
                self.scheduler.add_request(request)

    def _make_outputs(
        self, result: RunnerOutput, finished: list[Request]
    ) -> list[EngineCoreOutput]:
        for request_id, positions in result.prompt_logprobs.items():
            if request_id in self._params:  # not aborted while its step ran
                # A recomputed prompt (after a preemption) gives the same positions again.
                self._prompt_logprobs.setdefault(request_id, {}).update(positions)
        finished_by_id = {request.request_id: request for request in finished}
        outputs: list[EngineCoreOutput] = []
        for request_id, token in result.sampled_token_ids.items():
            request = finished_by_id.get(request_id) or self.scheduler.get_request(request_id)
            if request is None or (
                request.status is not RequestStatus.RUNNING and request_id not in finished_by_id
            ):
                # Finished, aborted or preempted while its step ran: update() dropped the token.
                continue
            if request.num_output_tokens == 1:
                self._prompt_tokens_total += request.num_prompt_tokens
            self._generation_tokens_total += 1
            logprobs = result.logprobs.get(request_id)
            prompt_logprobs = None
            if request.num_output_tokens == 1 and request_id in self._prompt_logprobs:
                by_position = self._prompt_logprobs.pop(request_id)
                prompt_logprobs = [by_position[p] for p in sorted(by_position)]
            outputs.append(
                EngineCoreOutput(
                    request_id=request_id,
                    new_token_ids=[token],
                    new_logprobs=None if logprobs is None else [logprobs],
                    finish_reason=request.status.finish_reason,
                    stop_reason=self._stop_reason(request),
                    num_cached_tokens=request.num_cached_tokens,
                    prompt_logprobs=prompt_logprobs,
                )
            )
        for request in finished:
            self._params.pop(request.request_id, None)
            self._prompt_logprobs.pop(request.request_id, None)
        return outputs

    def _stop_reason(self, request: Request) -> int | None:
        """The user's stop token that finished the request; None for EOS (as vLLM)."""
        if request.stop_reason is None:
            return None
        user_stop_ids = self._params[request.request_id].stop_token_id_set
        return request.stop_reason if request.stop_reason in user_stop_ids else None
