"""`RequestRouter`: between the HTTP handlers and the EngineCore process.

It owns the `OutputProcessor` (detokenization, stop strings, n fan-out and fan-in), turns each
`CoreUpdate` into per-choice deltas pushed to their `Generation`, records the latency and token
metrics, aborts samples whose stop string matched, and runs the watcher that aborts requests
whose client disconnected (aiohttp does not cancel handlers, so nobody else would notice a
client that left while its request waits or generates).

Every abort goes through `abort()`: idempotent, it releases the request in the processor, tells
the core to free its KV blocks and ends its unfinished samples with finish_reason "abort".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmservice.runtime.sampling_params import SamplingParams
from llmservice.runtime.server.core_client import CoreClient, EngineDeadError
from llmservice.runtime.server.core_protocol import CoreUpdate
from llmservice.runtime.server.errors import invalid_request
from llmservice.runtime.server.generation import Generation, PromptInput, SampleState
from llmservice.runtime.server.metrics import RequestClock, ServerMetrics

if TYPE_CHECKING:  # it imports torch: loaded only once the engine core is starting
    from llmservice.runtime.output_processor import OutputProcessor

logger = logging.getLogger(__name__)

# How often the watcher looks for clients that went away.
_DISCONNECT_POLL_S = 0.2


class RequestRouter:
    """Submits requests to the core and routes its outputs back to their generations."""

    def __init__(self, processor: OutputProcessor, metrics: ServerMetrics) -> None:
        self._processor = processor
        self._metrics = metrics
        self._client: CoreClient | None = None
        self._generations: dict[str, Generation] = {}  # by request id
        self._by_prompt: dict[str, tuple[Generation, int]] = {}  # prompt id -> (gen, prompt idx)
        self._by_core: dict[str, tuple[Generation, SampleState]] = {}  # core id -> its sample
        self._watcher: asyncio.Task[None] | None = None

    @property
    def num_in_flight(self) -> int:
        """Core requests (samples) submitted and not finished."""
        return len(self._by_core)

    @property
    def num_requests(self) -> int:
        """HTTP requests with unfinished samples."""
        return len(self._generations)

    def attach(self, client: CoreClient) -> None:
        """Start routing through `client` (and start the disconnect watcher)."""
        self._client = client
        self._watcher = asyncio.create_task(self._watch_disconnects(), name="disconnect-watcher")

    async def close(self) -> None:
        """Stop the watcher."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def submit(
        self,
        request_id: str,
        prompts: list[PromptInput],
        params: SamplingParams,
        priority: int,
        is_client_gone: Callable[[], bool] | None = None,
    ) -> Generation:
        """Send a request's samples to the core; EngineDeadError when the core is gone."""
        if self._client is None:
            raise EngineDeadError("the engine core is not started")
        generation = Generation(request_id, prompts, params.n, self.abort, is_client_gone)
        arrival = time.monotonic()
        core_requests = []
        for prompt_index, prompt in enumerate(prompts):
            prompt_id = request_id if len(prompts) == 1 else f"{request_id}-{prompt_index}"
            requests = self._processor.add_request(
                prompt_id, prompt.text, prompt.token_ids, params, priority, arrival
            )
            generation.prompt_ids.append(prompt_id)
            self._by_prompt[prompt_id] = (generation, prompt_index)
            for sample_index, core_request in enumerate(requests):
                sample = SampleState(core_request.request_id, RequestClock(arrival))
                generation.samples[prompt_index * params.n + sample_index] = sample
                self._by_core[core_request.request_id] = (generation, sample)
            core_requests.extend(requests)
        self._generations[request_id] = generation
        try:
            self._client.add(core_requests)
        except EngineDeadError:
            self._release(generation)
            raise
        return generation

    def abort(self, generation: Generation, error: BaseException | None = None) -> None:
        """Cut a request short: free it in the processor and the core, then end its samples
        with finish_reason "abort" (or fail the generation with `error`)."""
        if self._generations.pop(generation.request_id, None) is None:
            return
        core_ids: list[str] = []
        for prompt_id in generation.prompt_ids:
            core_ids.extend(self._processor.abort_request(prompt_id))
        if self._client is not None:
            self._client.abort(core_ids)
        self._release(generation)
        # NOTE: imported here, not at the top: the module imports torch, which the API process
        # loads only while the engine core starts (the router exists only after that).
        from llmservice.runtime.output_processor import CompletionDelta

        now = time.monotonic()
        for choice_index, sample in generation.samples.items():
            if sample.finished:
                continue
            self._metrics.record_finish(sample.clock, "abort", now)
            if error is None:
                prompt_id = generation.prompt_ids[choice_index // generation.n]
                sample_index = choice_index % generation.n
                generation.push(
                    choice_index,
                    CompletionDelta(prompt_id, sample_index, "", [], None, "abort", None),
                )
        if error is not None:
            generation.fail(error)

    def abort_all(self) -> None:
        """Abort every request in flight (shutdown timeout)."""
        for generation in list(self._generations.values()):
            self.abort(generation)

    # CoreListener

    def on_update(self, update: CoreUpdate) -> None:
        self._metrics.set_core_stats(update.stats)
        for core_id, scheduled_at in update.scheduled.items():
            entry = self._by_core.get(core_id)
            if entry is not None:
                self._metrics.record_queue_time(entry[1].clock, scheduled_at)
        if not update.outputs:
            return
        processed = self._processor.process_outputs(update.outputs)
        for delta in processed.deltas:
            generation, prompt_index = self._by_prompt[delta.request_id]
            choice_index = prompt_index * generation.n + delta.index
            sample = generation.samples[choice_index]
            num_prompt_tokens = len(generation.prompts[prompt_index].token_ids)
            self._metrics.record_tokens(
                sample.clock, num_prompt_tokens, len(delta.token_ids), update.timestamp
            )
            if delta.finish_reason is not None:
                self._metrics.record_finish(sample.clock, delta.finish_reason, update.timestamp)
                self._by_core.pop(sample.core_id, None)
            generation.push(choice_index, delta)
            if generation.finished:
                self._generations.pop(generation.request_id, None)
                self._release(generation)
        if processed.abort_ids and self._client is not None:
            self._client.abort(processed.abort_ids)  # stop strings: the core must stop too

    def on_rejected(self, request_id: str, message: str) -> None:
        entry = self._by_core.get(request_id)
        if entry is not None:
            self.abort(entry[0], invalid_request(message))

    def on_failure(self, message: str) -> None:
        generations = list(self._generations.values())
        for generation in generations:
            self._release(generation)
            generation.fail(EngineDeadError(message))
        self._generations.clear()

    def _release(self, generation: Generation) -> None:
        for prompt_id in generation.prompt_ids:
            self._by_prompt.pop(prompt_id, None)
        for sample in generation.samples.values():
            self._by_core.pop(sample.core_id, None)

    async def _watch_disconnects(self) -> None:
        while True:
            await asyncio.sleep(_DISCONNECT_POLL_S)
            gone = [
                g
                for g in self._generations.values()
                if g.is_client_gone is not None and g.is_client_gone()
            ]
            for generation in gone:
                logger.info("client of %s disconnected; aborting it", generation.request_id)
                self.abort(generation)
