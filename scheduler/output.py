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
