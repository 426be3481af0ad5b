"""Requests, limits, statuses and the scheduler configuration."""

from __future__ import annotations

import pytest

from llmservice.scheduler import Request, RequestLimits, RequestStatus, SchedulerConfig


def test_a_new_request_starts_waiting_with_nothing_computed() -> None:
    r = Request("a", [5, 6, 7], RequestLimits(max_tokens=3), priority=2, arrival_time=1.5)
    assert r.status is RequestStatus.WAITING
    assert (r.num_prompt_tokens, r.num_output_tokens, r.num_tokens) == (3, 0, 3)
    assert r.num_computed_tokens == r.num_cached_tokens == r.num_preemptions == 0
    assert r.stop_reason is None and not r.is_finished
    r.append_output_token(9)
    assert list(r.all_token_ids) == [5, 6, 7, 9]
    assert r.output_token_ids == [9] and r.num_tokens == 4
    assert r.prompt_token_ids == [5, 6, 7]


def test_the_prompt_is_copied() -> None:
    prompt = [1, 2]
    r = Request("a", prompt, RequestLimits(max_tokens=1))
    prompt.append(3)
    assert r.num_prompt_tokens == 2


def test_statuses_tell_whether_and_why_a_request_finished() -> None:
    assert [s.finish_reason for s in RequestStatus] == [
        None,
        None,
        None,
        "stop",
        "length",
        "abort",
    ]
    assert [s.is_finished for s in RequestStatus] == [False, False, False, True, True, True]


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        RequestLimits(max_tokens=0)
    with pytest.raises(ValueError, match="min_tokens must be between 0 and max_tokens=2"):
        RequestLimits(max_tokens=2, min_tokens=3)
    limits = RequestLimits(max_tokens=2, stop_token_ids={3, 4})  # type: ignore[arg-type]
    assert limits.stop_token_ids == frozenset({3, 4})


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="max_num_seqs must be an int >= 1"):
        SchedulerConfig(max_num_seqs=0, max_num_batched_tokens=8, max_model_len=8)
    with pytest.raises(ValueError, match="max_model_len must be >= 2"):
        SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=8, max_model_len=1)
    with pytest.raises(ValueError, match="policy must be one of"):
        SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=8, max_model_len=8, policy="lifo")  # type: ignore[arg-type]
