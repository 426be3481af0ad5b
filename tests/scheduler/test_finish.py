"""How requests end: stop tokens, min_tokens, max_tokens, max_model_len, aborts in every state."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmservice.scheduler import Request, RequestLimits, RequestStatus, Scheduler, SchedulerOutput

MakeScheduler = Callable[..., Scheduler]
MakeRequest = Callable[..., Request]
Step = Callable[[Scheduler], tuple[SchedulerOutput, list[Request]]]
Token = Callable[[str, int], int]


def _run(s: Scheduler, step: Step) -> list[Request]:
    finished: list[Request] = []
    while s.has_unfinished_requests():
        finished += step(s)[1]
    return finished


def test_max_tokens_finishes_with_exactly_that_many_tokens(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step, expected_token: Token
) -> None:
    s = make_scheduler()
    r = make_request("a", 5, max_tokens=3)
    s.add_request(r)
    assert _run(s, step) == [r]
    assert r.output_token_ids == [expected_token("a", p) for p in (5, 6, 7)]
    assert r.status is RequestStatus.FINISHED_LENGTH and r.status.finish_reason == "length"
    assert s.get_request("a") is None
    assert s.kv_cache.usage == 0.0


@pytest.mark.parametrize(
    ("min_tokens", "stop_outputs", "num_outputs", "stopped_by"),
    [
        (0, [2], 2, 2),  # the 2nd output is a stop token: it ends the request
        (3, [2, 4], 4, 4),  # min_tokens=3 holds back the 2nd; the 4th stops it
        (2, [2], 2, 2),  # a stop token exactly at min_tokens stops
        (3, [1], 5, None),  # a stop token before min_tokens never comes back: max_tokens ends it
    ],
)
def test_stop_tokens_respect_min_tokens(
    make_scheduler: MakeScheduler,
    make_request: MakeRequest,
    step: Step,
    expected_token: Token,
    min_tokens: int,
    stop_outputs: list[int],
    num_outputs: int,
    stopped_by: int | None,
) -> None:
    s = make_scheduler()
    # The fake model's k-th output token (1-based) of a 5-token prompt sits at position 4 + k.
    stops = {k: expected_token("a", 4 + k) for k in stop_outputs}
    r = make_request(
        "a", 5, max_tokens=5, min_tokens=min_tokens, stop_token_ids=frozenset(stops.values())
    )
    s.add_request(r)
    _run(s, step)
    assert r.output_token_ids == [expected_token("a", 4 + k) for k in range(1, num_outputs + 1)]
    if stopped_by is None:
        assert r.status is RequestStatus.FINISHED_LENGTH and r.stop_reason is None
    else:
        assert r.status is RequestStatus.FINISHED_STOPPED and r.stop_reason == stops[stopped_by]


def test_no_request_grows_past_max_model_len(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(max_model_len=8)
    r = make_request("a", 6, max_tokens=100)
    s.add_request(r)
    _run(s, step)
    assert r.num_tokens == 8 and r.status is RequestStatus.FINISHED_LENGTH


def test_add_request_refuses_what_can_never_run(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(max_model_len=8)
    with pytest.raises(ValueError, match=r"8 tokens, which leaves no room .* max_model_len=8"):
        s.add_request(make_request("a", 8))
    with pytest.raises(ValueError, match="empty prompt"):
        s.add_request(Request("b", [], RequestLimits(max_tokens=1)))
    with pytest.raises(ValueError, match="request_id must be a non-empty str"):
        s.add_request(make_request("", 2))
    s.add_request(make_request("c", 2))
    with pytest.raises(ValueError, match="'c' is already in the scheduler"):
        s.add_request(make_request("c", 2))
    with pytest.raises(ValueError, match="priority must be an int"):
        s.add_request(Request("p", [1], RequestLimits(max_tokens=1), priority=None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="arrival_time must be a number"):
        s.add_request(Request("t", [1], RequestLimits(max_tokens=1), arrival_time="now"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extra_keys must be a tuple of hashable values"):
        s.add_request(Request("x", [1], RequestLimits(max_tokens=1), extra_keys=([1],)))
    used = make_request("d", 2, max_tokens=1)
    s.add_request(used)
    _run(s, step)
    with pytest.raises(ValueError, match="already scheduled once"):
        s.add_request(used)


def test_aborting_a_waiting_request(
    make_scheduler: MakeScheduler, make_request: MakeRequest
) -> None:
    s = make_scheduler()
    r = make_request("a", 5)
    s.add_request(r)
    assert s.finish_requests(["a"], RequestStatus.FINISHED_ABORTED) == [r]
    assert r.status.finish_reason == "abort"
    assert not s.has_unfinished_requests() and s.stats().num_waiting == 0
    out = s.schedule()
    assert out.is_empty and out.finished_ids == ("a",)
    assert s.schedule().finished_ids == ()


def test_aborting_a_running_request_frees_its_blocks(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler()
    s.add_request(make_request("a", 5, max_tokens=10))
    s.add_request(make_request("b", 5, max_tokens=2, first_token=20))
    step(s)
    assert s.kv_cache.usage > 0
    s.finish_requests("a", RequestStatus.FINISHED_ABORTED)  # a single id is accepted too
    assert [r.request_id for r in s.running] == ["b"]
    assert s.kv_cache.get_block_ids("a") == ()
    _run(s, step)
    assert s.kv_cache.usage == 0.0
    s.kv_cache.check_integrity()


def test_aborting_a_preempted_request_takes_it_out_of_the_queue(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(num_blocks=5, block_size=4, max_model_len=16)
    s.add_request(make_request("early", 4, max_tokens=10, arrival_time=0.0))
    late = make_request("late", 4, max_tokens=10, arrival_time=1.0, first_token=50)
    s.add_request(late)
    while late.status is not RequestStatus.PREEMPTED:
        step(s)
    s.finish_requests(["late"], RequestStatus.FINISHED_ABORTED)
    assert s.stats().num_waiting == 0
    assert [r.request_id for r in _run(s, step)] == ["early"]
    assert late.status is RequestStatus.FINISHED_ABORTED


def test_a_request_aborted_between_schedule_and_update_is_skipped(
    make_scheduler: MakeScheduler, make_request: MakeRequest
) -> None:
    s = make_scheduler()
    r = make_request("a", 5)
    s.add_request(r)
    out = s.schedule()
    s.finish_requests(["a"], RequestStatus.FINISHED_ABORTED)
    assert s.update(out, {}) == []
    assert r.num_output_tokens == 0
    s.kv_cache.check_integrity()
    assert s.kv_cache.usage == 0.0


def test_finishing_is_idempotent_and_ignores_unknown_ids(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler()
    s.add_request(make_request("a", 5, max_tokens=1))
    _run(s, step)
    assert s.finish_requests(["a", "nobody"], RequestStatus.FINISHED_ABORTED) == []
    s.add_request(make_request("b", 5))
    assert len(s.finish_requests(["b"], RequestStatus.FINISHED_STOPPED)) == 1
    assert s.finish_requests(["b"], RequestStatus.FINISHED_ABORTED) == []


def test_finish_requests_needs_a_finished_status(
    make_scheduler: MakeScheduler, make_request: MakeRequest
) -> None:
    s = make_scheduler()
    with pytest.raises(ValueError, match="finished status"):
        s.finish_requests(["a"], RequestStatus.RUNNING)


def test_update_refuses_a_missing_sampled_token(
    make_scheduler: MakeScheduler, make_request: MakeRequest
) -> None:
    s = make_scheduler()
    s.add_request(make_request("a", 5))
    out = s.schedule()
    with pytest.raises(ValueError, match="no sampled token for request 'a'"):
        s.update(out, {})


def test_update_refuses_the_same_output_twice(
    make_scheduler: MakeScheduler, make_request: MakeRequest
) -> None:
    s = make_scheduler()
    r = make_request("a", 5)
    s.add_request(r)
    out = s.schedule()
    s.update(out, {"a": 1})
    with pytest.raises(ValueError, match="already has 6 tokens, its chunk ends at 5"):
        s.update(out, {"a": 1})
    assert r.output_token_ids == [1]


def test_update_returns_finished_requests_once_and_reports_them_next_step(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler()
    s.add_request(make_request("a", 3, max_tokens=1))
    s.add_request(make_request("b", 3, max_tokens=2, first_token=10))
    _, finished = step(s)
    assert [r.request_id for r in finished] == ["a"]
    out, finished = step(s)
    assert out.finished_ids == ("a",) and [c.request_id for c in out.chunks] == ["b"]
    assert [r.request_id for r in finished] == ["b"]
