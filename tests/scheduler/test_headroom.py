"""Admission headroom: a full batch does not outgrow the KV cache, and nothing waits forever."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmservice.scheduler import NO_HEADROOM, HeadroomConfig, Request, Scheduler
from llmservice.scheduler.headroom import DEFAULT_HEADROOM, OUTPUT_ESTIMATE_CAP, Headroom

from .conftest import Step

MakeScheduler = Callable[..., Scheduler]
MakeRequest = Callable[..., Request]


def _run_all(s: Scheduler, step: Step, max_steps: int = 10_000) -> int:
    """Steps until every request finished; returns the most requests running at once."""
    most = 0
    for _ in range(max_steps):
        if not s.has_unfinished_requests():
            return most
        step(s)
        most = max(most, len(s.running))
    raise AssertionError("requests did not finish")


@pytest.mark.parametrize("headroom", [NO_HEADROOM, DEFAULT_HEADROOM], ids=["none", "default"])
def test_headroom_admits_what_the_cache_can_finish(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step, headroom: HeadroomConfig
) -> None:
    # 40 usable blocks of 4 tokens; 12 requests of 8 prompt + 12 output tokens (5 blocks each):
    # all prompts fit at once (2 blocks each) but only 8 whole requests do.
    s = make_scheduler(
        num_blocks=41, block_size=4, max_model_len=32, max_num_seqs=16, headroom=headroom
    )
    for i in range(12):
        s.add_request(make_request(f"r{i}", 8, max_tokens=12, first_token=i * 10))
    most = _run_all(s, step)
    preemptions = s.stats().num_preemptions_total
    if headroom is NO_HEADROOM:
        assert most == 12 and preemptions > 0  # over-admits, then recomputes
    else:
        assert most == 8 and preemptions == 0
    assert s.kv_cache.usage == 0.0


def test_an_empty_batch_admits_its_head_even_when_its_reserve_exceeds_the_cache(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    # max_tokens far beyond the 10 usable blocks: the reserve can never be met.
    s = make_scheduler(num_blocks=11, block_size=4, max_model_len=40, headroom=DEFAULT_HEADROOM)
    s.add_request(make_request("a", 4, max_tokens=30))
    s.add_request(make_request("b", 4, max_tokens=30, first_token=50))
    out, _ = step(s)
    assert [c.request_id for c in out.chunks] == ["a"]  # b waits for a's reserve
    _run_all(s, step)  # and both finish


def test_the_ratio_decays_without_preemptions_and_resets_on_one() -> None:
    headroom = Headroom(HeadroomConfig(initial=1.0, minimum=0.25, decay=0.5))
    assert headroom.reserve_tokens(remaining_prompt=3, remaining_output=10) == 13
    headroom.step(preempted=False)
    assert headroom.ratio == 0.5
    assert headroom.reserve_tokens(remaining_prompt=0, remaining_output=9) == 5  # rounded up
    headroom.step(preempted=False)
    headroom.step(preempted=False)
    assert headroom.ratio == 0.25
    headroom.step(preempted=True)
    assert headroom.ratio == 1.0
    # Outputs are estimated at most OUTPUT_ESTIMATE_CAP tokens (max_tokens is an upper bound).
    assert headroom.reserve_tokens(0, 10 * OUTPUT_ESTIMATE_CAP) == OUTPUT_ESTIMATE_CAP


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": 0.5, "minimum": 0.6}, "minimum <= initial"),
        ({"initial": 1.5}, "initial <= 1"),
        ({"decay": -0.1}, "decay must be >= 0"),
    ],
)
def test_bad_headroom_configs_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HeadroomConfig(**kwargs)
