"""Preemption by recompute when blocks run out: who is preempted, requeueing, recomputation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmservice.scheduler import Request, RequestStatus, Scheduler, SchedulerOutput

MakeScheduler = Callable[..., Scheduler]
MakeRequest = Callable[..., Request]
Step = Callable[[Scheduler], tuple[SchedulerOutput, list[Request]]]


def test_fcfs_preempts_the_latest_arrival_and_requeues_it_at_the_front(
    make_scheduler: MakeScheduler,
    make_request: MakeRequest,
    step: Step,
    expected_token: Callable[[str, int], int],
) -> None:
    # 4 usable blocks of 4 tokens; two requests that will want 14 tokens each.
    s = make_scheduler(num_blocks=5, block_size=4, max_model_len=16, max_num_seqs=2)
    early = make_request("early", 4, max_tokens=10, arrival_time=0.0)
    late = make_request("late", 4, max_tokens=10, arrival_time=1.0, first_token=50)
    s.add_request(early)
    s.add_request(late)
    s.add_request(make_request("queued", 2, arrival_time=2.0, first_token=90))
    out, _ = step(s)
    preempting = None
    while preempting is None:
        out, _ = step(s)
        if out.preempted_ids:
            preempting = out
    assert preempting.preempted_ids == ("late",)
    assert [c.request_id for c in preempting.chunks] == ["early"]  # nobody admitted this step
    assert late.status is RequestStatus.PREEMPTED
    assert late.num_computed_tokens == 0 and late.num_preemptions == 1
    kept = late.num_output_tokens
    assert kept > 0  # its outputs are kept and recomputed later
    assert s.waiting.peek() is late
    assert s.kv_cache.get_block_ids("late") == ()
    stats = s.stats()
    assert (stats.num_running, stats.num_waiting, stats.num_preemptions_total) == (1, 2, 1)

    resumed = None
    while s.has_unfinished_requests():
        out, _ = step(s)
        for c in out.chunks:
            if c.request_id == "late" and resumed is None:
                resumed = c
    assert resumed is not None
    # Re-admitted: prompt and kept outputs are computed again, then the next token is sampled.
    assert resumed.num_computed_tokens + resumed.num_new_tokens == 4 + kept
    assert resumed.samples
    for r in (early, late):
        assert r.output_token_ids == [expected_token(r.request_id, 4 + i) for i in range(10)]
        assert r.status is RequestStatus.FINISHED_LENGTH


def test_priority_preempts_the_largest_priority_value_even_if_it_arrived_first(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(num_blocks=5, block_size=4, max_model_len=16, policy="priority")
    s.add_request(make_request("low", 4, max_tokens=10, priority=5, arrival_time=0.0))
    s.add_request(make_request("high", 4, max_tokens=10, priority=0, arrival_time=1.0))
    preempted: list[str] = []
    while not preempted:
        preempted = list(step(s)[0].preempted_ids)
    assert preempted == ["low"]


def test_the_lowest_request_preempts_itself_when_it_needs_a_block(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(num_blocks=4, block_size=4, max_model_len=12, policy="priority")
    s.add_request(make_request("high", 6, max_tokens=5, priority=0))
    s.add_request(make_request("low", 4, max_tokens=5, priority=1, first_token=50))
    out, _ = step(s)  # high takes 2 blocks, low the third and last
    assert [c.request_id for c in out.chunks] == ["high", "low"]
    out, _ = step(s)  # high's 7th token fits; low's 5th needs a block: low is the victim
    assert out.preempted_ids == ("low",)
    assert [(c.request_id, c.num_new_tokens) for c in out.chunks] == [("high", 1)]


def test_preempting_a_request_scheduled_earlier_in_the_step_gives_its_tokens_back(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(num_blocks=4, block_size=4, max_model_len=12, policy="priority")
    low = make_request("low", 5, max_tokens=5, priority=5)
    s.add_request(low)
    step(s)  # low holds 2 blocks
    s.add_request(make_request("high", 4, max_tokens=5, priority=0, first_token=50))
    step(s)  # high is admitted into the last block; running order is [low, high]
    out, _ = step(s)
    # low's decode fits and is scheduled first; high's needs a block, so low is preempted.
    assert out.preempted_ids == ("low",)
    assert [(c.request_id, c.num_computed_tokens, c.num_new_tokens) for c in out.chunks] == [
        ("high", 4, 1)
    ]
    assert out.num_batched_tokens == 1
    assert low.num_computed_tokens == 0


def test_a_pool_smaller_than_max_model_len_is_refused(make_scheduler: MakeScheduler) -> None:
    with pytest.raises(ValueError, match="fewer than max_model_len=20"):
        make_scheduler(num_blocks=5, block_size=4, max_model_len=20)
