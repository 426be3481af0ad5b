"""A request as the scheduler sees it: its tokens, limits and all of its mutable state.

All per-request state lives here; the scheduler and the KV-cache manager only change it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class RequestStatus(enum.Enum):
    """Where a request is in its life."""

    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "finished_stopped"
    FINISHED_LENGTH = "finished_length"
    FINISHED_ABORTED = "finished_aborted"

    @property
    def is_finished(self) -> bool:
        """Whether the request has left the scheduler."""
        return self in _FINISH_REASONS

    @property
    def finish_reason(self) -> str | None:
        """The OpenAI finish reason ("stop", "length", "abort"), None while unfinished."""
        return _FINISH_REASONS.get(self)


_FINISH_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
}


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What the scheduler needs of the sampling parameters."""

    max_tokens: int
    """Output tokens at most (>= 1)."""
    min_tokens: int = 0
    """Stop tokens do not finish the request before it has this many output tokens."""
    stop_token_ids: frozenset[int] = frozenset()
    """Token ids that finish the request (the engine merges EOS in unless ignore_eos)."""
    reuse_cached_prefix: bool = True
    """Start from cached prompt blocks; False computes every prompt token (prompt logprobs
    need the logits of each)."""

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise ValueError(f"max_tokens must be an int, got {self.max_tokens!r}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(
                f"min_tokens must be between 0 and max_tokens={self.max_tokens}, "
                f"got {self.min_tokens}"
            )
        if not isinstance(self.stop_token_ids, frozenset):
            # Accept any iterable of ids from callers; keep the field hashable and immutable.
            stop_ids: Iterable[int] = self.stop_token_ids
            object.__setattr__(self, "stop_token_ids", frozenset(stop_ids))


class Request:
    """One generation request: prompt, limits, priority and progress.

    `num_computed_tokens` counts tokens whose K/V is computed or being computed by a scheduled
    step; `all_token_ids` (prompt + output) are the tokens known so far. A request is done
    computing when both are equal and no new token has been sampled yet.
    """

    __slots__ = (
        "_all_token_ids",
        "arrival_time",
        "block_hashes",
        "extra_keys",
        "limits",
        "num_cached_tokens",
        "num_computed_tokens",
        "num_output_placeholders",
        "num_preemptions",
        "num_tokens",
        "output_token_ids",
        "priority",
        "prompt_token_ids",
        "request_id",
        "status",
        "stop_reason",
    )

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: Sequence[int],
        limits: RequestLimits,
        priority: int = 0,
        arrival_time: float = 0.0,
        extra_keys: tuple[object, ...] = (),
    ) -> None:
        """Ties in `arrival_time` are broken by the order in which requests were added."""
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.limits = limits
        self.priority = priority
        """Lower is served first under the "priority" policy."""
        self.arrival_time = arrival_time
        """Seconds on the caller's monotonic clock."""
        self.extra_keys = extra_keys
        """Hashable keys mixed into block hashes (e.g. a LoRA id): no K/V sharing across them."""
        self.output_token_ids: list[int] = []
        self._all_token_ids = list(self.prompt_token_ids)
        self.num_tokens = len(self._all_token_ids)
        """Prompt plus output tokens known so far (kept as a plain attribute: the hot loops
        read it for every request in every step)."""
        self.num_computed_tokens = 0
        self.num_output_placeholders = 0
        """Output tokens sampled by a step still running on the device, not yet appended
        (async scheduling): `schedule()` counts them as known tokens."""
        self.num_cached_tokens = 0
        """Prompt tokens served from the prefix cache at (first) admission."""
        self.status = RequestStatus.WAITING
        self.num_preemptions = 0
        self.stop_reason: int | None = None
        """The stop token id that finished the request, if any."""
        self.block_hashes: list[int] = []
        """Chained hashes of the full blocks, extended by the KV-cache manager."""

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, status={self.status.name}, "
            f"tokens={self.num_prompt_tokens}+{self.num_output_tokens}, "
            f"computed={self.num_computed_tokens})"
        )

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def all_token_ids(self) -> Sequence[int]:
        """Prompt plus output tokens (a view: do not modify; use `append_output_token`)."""
        return self._all_token_ids

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    def append_output_token(self, token_id: int) -> None:
        """Record one sampled token (it replaces a placeholder, if the request has one)."""
        if self.num_output_placeholders:
            self.num_output_placeholders -= 1
        self.output_token_ids.append(token_id)
        self._all_token_ids.append(token_id)
        self.num_tokens += 1
