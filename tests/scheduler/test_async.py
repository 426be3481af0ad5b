"""Async scheduling: step N+1 is scheduled (with output placeholders) before step N's update."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmservice.scheduler import Request, Scheduler, SchedulerOutput

from .conftest import req, token_at

MakeScheduler = Callable[..., Scheduler]


def _sampled(out: SchedulerOutput) -> dict[str, int]:
    """The fake model's tokens for the chunks of `out` that sample."""
    return {
        c.request_id: token_at(c.request_id, c.num_computed_tokens + c.num_new_tokens)
        for c in out.chunks
        if c.samples
    }


def _requests() -> list[Request]:
    return [
        req("a", 5, max_tokens=9, arrival_time=0.0),
        req("b", 11, max_tokens=6, arrival_time=1.0, first_token=40),
        req("c", 3, max_tokens=12, arrival_time=2.0, first_token=80),
        req("d", 7, max_tokens=3, arrival_time=3.0, first_token=120),
    ]


def _run_sync(s: Scheduler) -> dict[str, list[int]]:
    requests = _requests()
    for r in requests:
        s.add_request(r)
    while s.has_unfinished_requests():
        out = s.schedule()
        s.update(out, _sampled(out))
    return {r.request_id: r.output_token_ids for r in requests}


def _run_async(s: Scheduler) -> tuple[dict[str, list[int]], int]:
    """Schedule one step ahead of the updates; returns the outputs and the number of chunks
    scheduled while their request's previous token was still a placeholder."""
    requests = _requests()
    for r in requests:
        s.add_request(r)
    pending: SchedulerOutput | None = None
    ahead = 0
    while s.has_unfinished_requests() or pending is not None:
        out = None
        if s.has_unfinished_requests():
            out = s.schedule(async_output=True)
            s.kv_cache.check_integrity()
            for chunk in out.chunks:
                request = s.get_request(chunk.request_id)
                if request is not None and chunk.num_computed_tokens >= request.num_tokens:
                    ahead += 1
                    assert chunk.num_new_tokens == 1 and chunk.samples
        if pending is not None:
            s.update(pending, _sampled(pending))
            s.kv_cache.check_integrity()
        pending = out
    assert all(r.num_output_placeholders == 0 or r.is_finished for r in requests)
    return {r.request_id: r.output_token_ids for r in requests}, ahead


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"max_num_batched_tokens": 4},
        {"num_blocks": 8, "block_size": 4, "max_model_len": 24, "max_num_seqs": 4},
    ],
    ids=["default", "chunked", "preemption"],
)
def test_async_schedule_gives_the_same_tokens_as_sync(
    make_scheduler: MakeScheduler, kwargs: dict[str, int]
) -> None:
    expected = _run_sync(make_scheduler(**kwargs))
    s = make_scheduler(**kwargs)
    got, ahead = _run_async(s)
    assert got == expected
    assert {rid: len(t) for rid, t in got.items()} == {"a": 9, "b": 6, "c": 12, "d": 3}
    assert ahead > 10  # decodes really ran ahead of their tokens
    assert s.kv_cache.usage == 0.0
    if "num_blocks" in kwargs:
        assert s.stats().num_preemptions_total > 0


def test_placeholders_count_as_known_tokens_until_the_update(make_scheduler: MakeScheduler) -> None:
    s = make_scheduler()
    r = req("a", 4, max_tokens=5)
    s.add_request(r)
    out = s.schedule(async_output=True)
    assert r.num_output_placeholders == 1
    nxt = s.schedule(async_output=True)  # before the update: a decode of the placeholder
    assert [(c.num_computed_tokens, c.num_new_tokens) for c in nxt.chunks] == [(4, 1)]
    assert r.num_output_placeholders == 2
    s.update(out, _sampled(out))
    assert r.num_output_placeholders == 1
    assert r.output_token_ids == [token_at("a", 4)]
    s.update(nxt, _sampled(nxt))
    assert r.num_output_placeholders == 0
    assert r.output_token_ids == [token_at("a", 4), token_at("a", 5)]


def test_no_chunk_follows_a_last_token_in_flight(make_scheduler: MakeScheduler) -> None:
    """A request whose in-flight token is its last (max_tokens, or max_model_len) gets no chunk
    for the next one: the update finishes it, and that chunk's work would be dropped."""
    s = make_scheduler(max_model_len=12)
    requests = [
        req("one", 5, max_tokens=1),
        req("four", 6, max_tokens=4, arrival_time=1.0, first_token=40),
        req("by_len", 8, max_tokens=20, arrival_time=2.0, first_token=80),  # 12 = max_model_len
    ]
    computed = {r.request_id: 0 for r in requests}
    for r in requests:
        s.add_request(r)
    pending: SchedulerOutput | None = None
    while s.has_unfinished_requests() or pending is not None:
        out = s.schedule(async_output=True) if s.has_unfinished_requests() else None
        for chunk in out.chunks if out is not None else ():
            computed[chunk.request_id] += chunk.num_new_tokens
        if pending is not None:
            s.update(pending, _sampled(pending))
        pending = out
    assert [len(r.output_token_ids) for r in requests] == [1, 4, 4]
    # Every token's K/V but the last output token's, and nothing more.
    assert computed == {"one": 5, "four": 6 + 3, "by_len": 8 + 3}
    assert s.kv_cache.usage == 0.0
