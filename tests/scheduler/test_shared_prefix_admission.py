"""Requests arriving together with the same prompt prefix compute it once, not once each."""

from __future__ import annotations

from collections.abc import Callable

from llmservice.scheduler import Request, RequestStatus, Scheduler

from .conftest import Step

MakeScheduler = Callable[..., Scheduler]
MakeRequest = Callable[..., Request]


def _same_prefix(make_request: MakeRequest, rid: str) -> Request:
    return make_request(rid, 9, max_tokens=3)  # tokens 0..8: two full blocks of 4, then one


def test_a_follower_waits_for_the_leaders_prefix_and_then_hits_the_cache(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(block_size=4)
    a, b = _same_prefix(make_request, "a"), _same_prefix(make_request, "b")
    s.add_request(a)
    s.add_request(b)
    first, _ = step(s)
    assert [c.request_id for c in first.chunks] == ["a"]  # b waits one step
    second, _ = step(s)
    assert {c.request_id: c.num_new_tokens for c in second.chunks} == {"a": 1, "b": 1}
    assert b.num_cached_tokens == 8  # both blocks came from a's computation
    while s.has_unfinished_requests():
        step(s)


def test_without_prefix_caching_both_start_at_once(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(block_size=4, enable_prefix_caching=False)
    s.add_request(_same_prefix(make_request, "a"))
    s.add_request(_same_prefix(make_request, "b"))
    first, _ = step(s)
    assert [c.request_id for c in first.chunks] == ["a", "b"]


def test_a_leader_aborted_before_its_prefix_is_cached_releases_the_follower(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(block_size=4)
    a, b = _same_prefix(make_request, "a"), _same_prefix(make_request, "b")
    s.add_request(a)
    s.add_request(b)
    out = s.schedule()  # a is scheduled (b waits), then aborted before its step is applied
    assert [c.request_id for c in out.chunks] == ["a"]
    s.finish_requests(["a"], RequestStatus.FINISHED_ABORTED)
    s.update(out, {"a": 5})
    second, _ = step(s)
    assert [c.request_id for c in second.chunks] == ["b"]
    assert second.chunks[0].num_new_tokens == 9  # nothing cached: it computes its own prompt
