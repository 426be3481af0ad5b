"""What one scheduling step decided, and scheduler statistics: ids and ints only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScheduledChunk:
    """The tokens of one request computed in this step."""

    request_id: str
    """The request."""
    num_computed_tokens: int
    """Tokens computed BEFORE this step: the chunk covers positions
    [num_computed_tokens, num_computed_tokens + num_new_tokens)."""
    num_new_tokens: int
    """Tokens computed in this step (>= 1)."""
    block_ids: tuple[int, ...]
    """The request's whole block table after allocation (pad with the null block 0)."""
    samples: bool
    """True when the chunk reaches the end of the known tokens: sample one token for it."""


# NOTE: the generated __init__ of a frozen dataclass sets each field through a looked-up
# `object.__setattr__` (about 0.8 µs for five fields here); a step creates one chunk per running
# request, so the scheduler's hot loop builds chunks with the slot descriptors directly (about
# 0.3 µs). The result is an ordinary, equal and still frozen ScheduledChunk.
_new_object = object.__new__
_set_request_id = vars(ScheduledChunk)["request_id"].__set__
_set_num_computed = vars(ScheduledChunk)["num_computed_tokens"].__set__
_set_num_new = vars(ScheduledChunk)["num_new_tokens"].__set__
_set_block_ids = vars(ScheduledChunk)["block_ids"].__set__
_set_samples = vars(ScheduledChunk)["samples"].__set__


def new_chunk(
    request_id: str,
    num_computed_tokens: int,
    num_new_tokens: int,
    block_ids: tuple[int, ...],
    samples: bool,
) -> ScheduledChunk:
    """`ScheduledChunk(...)` without the frozen-dataclass construction overhead."""
    chunk: ScheduledChunk = _new_object(ScheduledChunk)
    _set_request_id(chunk, request_id)
    _set_num_computed(chunk, num_computed_tokens)
    _set_num_new(chunk, num_new_tokens)
    _set_block_ids(chunk, block_ids)
    _set_samples(chunk, samples)
    return chunk


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    """One step: the chunks to run and the requests whose per-request state can be dropped."""

    chunks: tuple[ScheduledChunk, ...]
    """The scheduled requests: running ones first (in running order), then new admissions."""
    num_batched_tokens: int
    """Sum of num_new_tokens (<= max_num_batched_tokens)."""
    preempted_ids: tuple[str, ...]
    """Requests preempted in this step: their K/V is gone, they will be recomputed."""
    finished_ids: tuple[str, ...]
    """Requests that left (finished or aborted) since the previous step."""

    @property
    def is_empty(self) -> bool:
        """Nothing to run (preempted_ids and finished_ids may still need handling)."""
        return not self.chunks


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot for metrics."""

    num_running: int
    """Requests holding KV blocks."""
    num_waiting: int
    """Requests waiting for admission, preempted ones included."""
    kv_cache_usage: float
    """Fraction (0..1) of usable KV blocks held by requests."""
    num_preemptions_total: int
    """Preemptions since start."""
    prefix_cache_queries: int
    """Tokens looked up in the prefix cache since start."""
    prefix_cache_hits: int
    """Of those, tokens served from the cache."""
