"""One scheduling rule: token budget, sequence cap, chunked prefill, decode first, admission."""

from __future__ import annotations

from collections.abc import Callable

from llmservice.scheduler import Request, Scheduler, SchedulerOutput

MakeScheduler = Callable[..., Scheduler]
MakeRequest = Callable[..., Request]
Step = Callable[[Scheduler], tuple[SchedulerOutput, list[Request]]]


def _chunks(out: object) -> list[tuple[str, int, int, bool]]:
    return [
        (c.request_id, c.num_computed_tokens, c.num_new_tokens, c.samples)
        for c in out.chunks  # type: ignore[attr-defined]
    ]


def test_the_token_budget_chunks_prefills_and_running_requests_go_first(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(max_num_batched_tokens=16)
    for i in range(3):
        s.add_request(make_request(f"r{i}", 10, first_token=100 * i))
    out, _ = step(s)
    assert _chunks(out) == [("r0", 0, 10, True), ("r1", 0, 6, False)]
    assert out.num_batched_tokens == 16
    out, _ = step(s)
    # r0 decodes, r1 finishes its prefill, then r2 is admitted with what is left.
    assert _chunks(out) == [("r0", 10, 1, True), ("r1", 6, 4, True), ("r2", 0, 10, True)]
    assert out.num_batched_tokens == 15


def test_a_long_prompt_is_computed_in_chunks_and_samples_only_at_its_end(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(max_num_batched_tokens=16)
    s.add_request(make_request("long", 40))
    seen = [_chunks(step(s)[0]) for _ in range(4)]
    assert seen == [
        [("long", 0, 16, False)],
        [("long", 16, 16, False)],
        [("long", 32, 8, True)],
        [("long", 40, 1, True)],
    ]


def test_block_tables_grow_with_the_computed_tokens(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(block_size=4, max_num_batched_tokens=6)
    s.add_request(make_request("a", 10))
    tables = [step(s)[0].chunks[0].block_ids for _ in range(3)]
    assert [len(t) for t in tables] == [2, 3, 3]  # 6 tokens, 10 tokens, 11 tokens
    assert tables[1][:2] == tables[0] and tables[2] == tables[1]


def test_max_num_seqs_caps_the_running_requests(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(max_num_seqs=2)
    for i in range(4):
        s.add_request(make_request(f"r{i}", 3, max_tokens=2, first_token=10 * i))
    out, _ = step(s)
    assert [c.request_id for c in out.chunks] == ["r0", "r1"]
    stats = s.stats()
    assert (stats.num_running, stats.num_waiting) == (2, 2)
    out, finished = step(s)
    assert [r.request_id for r in finished] == ["r0", "r1"]
    out, _ = step(s)
    assert [c.request_id for c in out.chunks] == ["r2", "r3"]
    assert out.finished_ids == ("r0", "r1")


def test_fcfs_does_not_let_small_requests_overtake_a_head_waiting_for_blocks(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(num_blocks=5, block_size=4, max_num_batched_tokens=8, max_model_len=16)
    s.add_request(make_request("r0", 8, max_tokens=8))
    step(s)
    s.add_request(make_request("big", 12, first_token=50))
    s.add_request(make_request("small", 2, first_token=90))
    out, _ = step(s)
    # r0 takes a third block for its decode; "big" needs 2 of the 1 left, "small" waits behind.
    assert _chunks(out) == [("r0", 8, 1, True)]
    assert s.stats().num_waiting == 2


def test_priority_policy_admits_the_lowest_value_first(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(max_num_seqs=1, policy="priority")
    s.add_request(make_request("low", 3, priority=5, arrival_time=0.0))
    s.add_request(make_request("high", 3, priority=0, arrival_time=1.0, first_token=20))
    s.add_request(make_request("high-later", 3, priority=0, arrival_time=2.0, first_token=40))
    order = []
    while s.has_unfinished_requests():
        _, finished = step(s)
        order += [r.request_id for r in finished]
    assert order == ["high", "high-later", "low"]


def test_a_repeated_prompt_is_served_from_the_prefix_cache(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(block_size=4)
    s.add_request(make_request("first", 12, max_tokens=1))
    step(s)
    again = make_request("again", 12, max_tokens=1)
    s.add_request(again)
    out, _ = step(s)
    # 12 prompt tokens = 3 full blocks, but the last token is always recomputed.
    assert _chunks(out) == [("again", 8, 4, True)]
    assert again.num_cached_tokens == 8
    stats = s.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (24, 8)


def test_a_request_admitted_later_reuses_blocks_a_running_request_computed(
    make_scheduler: MakeScheduler, make_request: MakeRequest, step: Step
) -> None:
    s = make_scheduler(block_size=4, max_num_batched_tokens=8)
    s.add_request(make_request("a", 10, max_tokens=5))
    step(s)  # a computed 8 tokens: two full blocks, cached after the update
    s.add_request(make_request("b", 9, max_tokens=5))
    out, _ = step(s)
    a_chunk, b_chunk = out.chunks
    assert (b_chunk.num_computed_tokens, b_chunk.num_new_tokens) == (8, 1)
    assert b_chunk.block_ids[:2] == a_chunk.block_ids[:2]
