"""`Generation`: the samples of one HTTP request, as an async stream of per-choice deltas.

A request has one or more prompts (a completions batch) and n samples per prompt; its choice
index is `prompt_index * n + sample_index`, as OpenAI numbers them. The router pushes each
sample's `CompletionDelta` as it arrives; the handler iterates them until every sample has
finished. `abort()` is the one way a request is cut short (client gone, drain timeout, error);
it is idempotent and ends every unfinished sample with finish_reason "abort".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmservice.runtime.server.metrics import RequestClock

if TYPE_CHECKING:  # it imports torch: loaded only once the engine core is starting
    from llmservice.runtime.output_processor import CompletionDelta


@dataclass(frozen=True, slots=True)
class PromptInput:
    """One prompt of a request, tokenized."""

    token_ids: list[int]
    """The prompt's token ids."""
    text: str | None = None
    """The prompt's text (rendered chat template included); None when given as token ids."""


@dataclass(slots=True)
class SampleState:
    """Book-keeping of one sample (one core request)."""

    core_id: str
    """The EngineCore's id of this sample."""
    clock: RequestClock
    """Its times, for the latency metrics."""
    finished: bool = False
    """Whether its last delta has been pushed."""
    num_output_tokens: int = 0
    """Tokens generated so far."""


class Generation:
    """The samples of one HTTP request; iterate it for `(choice_index, delta)` pairs."""

    def __init__(
        self,
        request_id: str,
        prompts: list[PromptInput],
        n: int,
        abort: Callable[[Generation], None],
        is_client_gone: Callable[[], bool] | None = None,
    ) -> None:
        self.request_id = request_id
        self.prompts = prompts
        self.n = n
        self.prompt_ids: list[str] = []  # the OutputProcessor's id of each prompt
        self.samples: dict[int, SampleState] = {}  # choice index -> its sample
        self.is_client_gone = is_client_gone
        self._abort = abort
        self._queue: asyncio.Queue[tuple[int, CompletionDelta] | BaseException] = asyncio.Queue()

    @property
    def finished(self) -> bool:
        """Whether every sample has pushed its last delta."""
        return all(sample.finished for sample in self.samples.values())

    def push(self, choice_index: int, delta: CompletionDelta) -> None:
        """Called by the router: a sample's next delta."""
        sample = self.samples[choice_index]
        if sample.finished:
            return
        sample.num_output_tokens += len(delta.token_ids)
        sample.finished = delta.finish_reason is not None
        self._queue.put_nowait((choice_index, delta))

    def fail(self, error: BaseException) -> None:
        """Called by the router: the request cannot go on (engine died, core refused it)."""
        for sample in self.samples.values():
            sample.finished = True
        self._queue.put_nowait(error)

    def abort(self) -> None:
        """End every unfinished sample now (finish_reason "abort"); idempotent."""
        if not self.finished:
            self._abort(self)

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> tuple[int, CompletionDelta]:
        if self._queue.empty() and self.finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item
