"""Shared helpers for scheduler tests: building a scheduler and running one step."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmservice.kvcache import KVCacheManager
from llmservice.scheduler import (
    NO_HEADROOM,
    HeadroomConfig,
    Request,
    RequestLimits,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
)

Step = Callable[[Scheduler], tuple[SchedulerOutput, list[Request]]]


def token_at(request_id: str, position: int) -> int:
    """The fake model's output: a deterministic function of (request, position)."""
    return (sum(map(ord, request_id)) * 31 + position * 7) % 1000 + 1000


def run_step(scheduler: Scheduler) -> tuple[SchedulerOutput, list[Request]]:
    """schedule -> fake model -> update; returns the output and the finished requests."""
    out = scheduler.schedule()
    scheduler.kv_cache.check_integrity()
    sampled = {
        c.request_id: token_at(c.request_id, c.num_computed_tokens + c.num_new_tokens)
        for c in out.chunks
        if c.samples
    }
    finished = scheduler.update(out, sampled)
    scheduler.kv_cache.check_integrity()
    return out, finished


@pytest.fixture
def step() -> Step:
    return run_step


@pytest.fixture
def expected_token() -> Callable[[str, int], int]:
    return token_at


@pytest.fixture
def make_scheduler() -> Callable[..., Scheduler]:
    def make(
        num_blocks: int = 64,
        block_size: int = 4,
        max_num_seqs: int = 8,
        max_num_batched_tokens: int = 64,
        max_model_len: int = 64,
        policy: str = "fcfs",
        enable_prefix_caching: bool = True,
        headroom: HeadroomConfig = NO_HEADROOM,
    ) -> Scheduler:
        # NOTE: no admission headroom by default: most tests pack tiny pools on purpose (to
        # preempt); test_headroom.py and the property tests run with it.
        config = SchedulerConfig(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len,
            policy=policy,  # type: ignore[arg-type]
            headroom=headroom,
        )
        return Scheduler(config, KVCacheManager(num_blocks, block_size, enable_prefix_caching))

    return make


def req(
    request_id: str,
    prompt_len: int,
    max_tokens: int = 4,
    *,
    first_token: int = 0,
    priority: int = 0,
    arrival_time: float = 0.0,
    min_tokens: int = 0,
    stop_token_ids: frozenset[int] = frozenset(),
) -> Request:
    """A request whose prompt is `first_token, first_token + 1, ...`."""
    return Request(
        request_id,
        list(range(first_token, first_token + prompt_len)),
        RequestLimits(max_tokens=max_tokens, min_tokens=min_tokens, stop_token_ids=stop_token_ids),
        priority=priority,
        arrival_time=arrival_time,
    )


@pytest.fixture
def make_request() -> Callable[..., Request]:
    return req
