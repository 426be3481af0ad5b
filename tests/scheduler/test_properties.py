"""Property tests: random workloads through the scheduler and a fake model over a paged cache.

The fake model stands in for attention: the "K/V" it writes at position p is a rolling hash of
the tokens 0..p, computed from the value it READS at p - 1 through the request's block table;
the token it samples is a function of the request and the value it reads at the last position.
So any wrong block sharing, stale prefix hit, lost block or overwritten slot changes the outputs
(and trips the read-back checks at once). Every request must then produce exactly what a plain
token-by-token oracle produces, whatever the budget, pool size, chunking, prefix caching,
preemption, policy and aborts.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from llmservice.kvcache import KVCacheManager
from llmservice.scheduler import (
    NO_HEADROOM,
    HeadroomConfig,
    Request,
    RequestLimits,
    RequestStatus,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
)
from llmservice.scheduler.headroom import DEFAULT_HEADROOM

VOCAB = 16
# Reserves all remaining output at first and nothing after four steps without a preemption.
FAST_DECAY = HeadroomConfig(initial=1.0, minimum=0.0, decay=0.25)
ROOT = 0x5EED


def kv_value(prev: int, token: int) -> int:
    """The fake K/V of a position: depends on every token up to it."""
    return hash((prev, token))


def sample(request_id: str, last_value: int) -> int:
    """The fake model's next token for a request whose last position holds `last_value`."""
    return zlib.crc32(f"{request_id}:{last_value}".encode()) % VOCAB


@dataclass(frozen=True)
class Spec:
    """One request of a workload."""

    request_id: str
    prompt: tuple[int, ...]
    limits: RequestLimits
    priority: int
    arrival_step: int
    abort_step: int | None
    abort_after_schedule: bool


@dataclass(frozen=True)
class Workload:
    specs: tuple[Spec, ...]
    block_size: int
    num_blocks: int
    config: SchedulerConfig
    prefix_caching: bool


def oracle(spec: Spec, max_model_len: int) -> tuple[list[int], RequestStatus]:
    """What the request must produce: sample token by token, no cache, no scheduler."""
    tokens = list(spec.prompt)
    value = ROOT
    for token in tokens:
        value = kv_value(value, token)
    outputs: list[int] = []
    limits = spec.limits
    while True:
        token = sample(spec.request_id, value)
        outputs.append(token)
        tokens.append(token)
        if token in limits.stop_token_ids and len(outputs) >= limits.min_tokens:
            return outputs, RequestStatus.FINISHED_STOPPED
        if len(outputs) >= limits.max_tokens or len(tokens) >= max_model_len:
            return outputs, RequestStatus.FINISHED_LENGTH
        value = kv_value(value, token)


class FakeModel:
    """Executes chunks against a paged "KV cache" of one int per slot."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.block_size = scheduler.kv_cache.block_size
        self.slots: dict[int, int] = {}

    def slot(self, block_ids: tuple[int, ...], position: int) -> int:
        block_id = block_ids[position // self.block_size]
        assert block_id != 0, "the null block is never part of a table"
        return block_id * self.block_size + position % self.block_size

    def execute(self, out: SchedulerOutput) -> dict[str, int]:
        sampled: dict[str, int] = {}
        blocks = self.scheduler.kv_cache._pool.blocks
        for chunk in out.chunks:
            request = self.scheduler.get_request(chunk.request_id)
            assert request is not None
            tokens = request.all_token_ids
            ids = chunk.block_ids
            start, end = chunk.num_computed_tokens, chunk.num_computed_tokens + chunk.num_new_tokens
            value = self.slots[self.slot(ids, start - 1)] if start else ROOT
            for pos in range(start, end):
                # Computed positions are never in a shared block: writes cannot clobber others.
                assert blocks[ids[pos // self.block_size]].ref_cnt == 1
                value = kv_value(value, tokens[pos])
                self.slots[self.slot(ids, pos)] = value
            if chunk.samples:
                expected = ROOT
                for pos in range(end):  # the whole context reads back right
                    expected = kv_value(expected, tokens[pos])
                    assert self.slots[self.slot(ids, pos)] == expected, (request, pos)
                sampled[chunk.request_id] = sample(chunk.request_id, value)
        return sampled


def check_step(s: Scheduler, out: SchedulerOutput) -> None:
    config = s.config
    assert out.num_batched_tokens == sum(c.num_new_tokens for c in out.chunks)
    assert out.num_batched_tokens <= config.max_num_batched_tokens
    assert len(out.chunks) <= config.max_num_seqs
    assert len(s.running) <= config.max_num_seqs
    assert len({c.request_id for c in out.chunks}) == len(out.chunks)
    assert not set(out.preempted_ids) & {c.request_id for c in out.chunks}
    for c in out.chunks:
        request = s.get_request(c.request_id)
        assert request is not None and request.status is RequestStatus.RUNNING
        end = c.num_computed_tokens + c.num_new_tokens
        assert c.num_new_tokens >= 1
        assert end == request.num_computed_tokens <= request.num_tokens <= config.max_model_len
        assert c.samples == (end == request.num_tokens)
        assert len(c.block_ids) * s.kv_cache.block_size >= end
    s.kv_cache.check_integrity()


def record_coverage(s: Scheduler, out: SchedulerOutput) -> None:
    """Tell hypothesis' statistics which paths the examples reach."""
    if not currently_in_test_context():
        return
    if out.preempted_ids:
        event("preemption")
    for c in out.chunks:
        if not c.samples:
            event("chunked prefill")
    if s.kv_cache.prefix_cache_hits:
        event("prefix-cache hit")


def run(workload: Workload) -> tuple[dict[str, Request], int]:
    """Drive the workload to the end; returns the requests and the preemptions."""
    kv = KVCacheManager(workload.num_blocks, workload.block_size, workload.prefix_caching)
    s = Scheduler(workload.config, kv)
    model = FakeModel(s)
    requests: dict[str, Request] = {}
    step = 0
    while step <= max(sp.arrival_step for sp in workload.specs) or s.has_unfinished_requests():
        assert step < 3000, "the workload did not finish: livelock or starvation"
        for spec in workload.specs:
            if spec.arrival_step == step:
                r = Request(
                    spec.request_id,
                    spec.prompt,
                    spec.limits,
                    priority=spec.priority,
                    arrival_time=float(step),
                )
                requests[spec.request_id] = r
                s.add_request(r)
        abort_now = [sp.request_id for sp in workload.specs if sp.abort_step == step]
        s.finish_requests(
            [rid for rid in abort_now if not _spec(workload, rid).abort_after_schedule],
            RequestStatus.FINISHED_ABORTED,
        )
        out = s.schedule()
        check_step(s, out)
        record_coverage(s, out)
        sampled = model.execute(out)
        s.finish_requests(
            [rid for rid in abort_now if _spec(workload, rid).abort_after_schedule],
            RequestStatus.FINISHED_ABORTED,
        )
        s.update(out, sampled)
        kv.check_integrity()
        step += 1
    kv.check_integrity()
    assert kv.usage == 0.0
    assert not s.running and not s.waiting
    return requests, s.stats().num_preemptions_total


def _spec(workload: Workload, request_id: str) -> Spec:
    return next(sp for sp in workload.specs if sp.request_id == request_id)


@st.composite
def workloads(draw: st.DrawFn, with_aborts: bool = True) -> Workload:
    block_size = draw(st.sampled_from([1, 2, 4, 8]))
    max_model_len = draw(st.integers(4, 40))
    shared = draw(st.lists(st.integers(0, 3), max_size=24))
    specs = []
    for i in range(draw(st.integers(1, 8))):
        head = shared[: draw(st.integers(0, len(shared)))]
        tail = draw(st.lists(st.integers(0, VOCAB - 1), max_size=16))
        prompt = ([*head, *tail] or [7])[: max_model_len - 1]
        max_tokens = draw(st.integers(1, 12))
        abort_step = draw(st.none() | st.integers(0, 30)) if with_aborts else None
        specs.append(
            Spec(
                request_id=f"r{i}",
                prompt=tuple(prompt),
                limits=RequestLimits(
                    max_tokens=max_tokens,
                    min_tokens=draw(st.integers(0, max_tokens)),
                    stop_token_ids=draw(st.frozensets(st.integers(0, VOCAB - 1), max_size=2)),
                ),
                priority=draw(st.integers(0, 2)),
                arrival_step=draw(st.integers(0, 6)),
                abort_step=abort_step,
                abort_after_schedule=draw(st.booleans()),
            )
        )
    min_blocks = -(-max_model_len // block_size) + 1  # one request of max_model_len must fit
    config = SchedulerConfig(
        max_num_seqs=draw(st.integers(1, 6)),
        max_num_batched_tokens=draw(st.integers(1, 24)),
        max_model_len=max_model_len,
        policy=draw(st.sampled_from(["fcfs", "priority"])),
        # Admission with no headroom, the default, and one that decays within a few steps.
        headroom=draw(st.sampled_from([NO_HEADROOM, DEFAULT_HEADROOM, FAST_DECAY])),
    )
    return Workload(
        specs=tuple(specs),
        block_size=block_size,
        num_blocks=draw(st.integers(min_blocks, min_blocks + 6)),
        config=config,
        prefix_caching=draw(st.booleans()),
    )


@settings(deadline=None, max_examples=200, derandomize=True)
@given(workloads(with_aborts=False))
def test_every_request_finishes_with_exactly_the_oracle_outputs(workload: Workload) -> None:
    requests, _ = run(workload)
    for spec in workload.specs:
        outputs, status = oracle(spec, workload.config.max_model_len)
        r = requests[spec.request_id]
        assert (r.output_token_ids, r.status) == (outputs, status), r
        assert r.num_tokens <= workload.config.max_model_len


@settings(deadline=None, max_examples=150, derandomize=True)
@given(workloads(with_aborts=True))
def test_aborts_at_any_time_leave_the_others_exact_and_free_everything(
    workload: Workload,
) -> None:
    requests, _ = run(workload)
    for spec in workload.specs:
        outputs, status = oracle(spec, workload.config.max_model_len)
        r = requests[spec.request_id]
        if r.status is RequestStatus.FINISHED_ABORTED:
            assert spec.abort_step is not None
            assert r.output_token_ids == outputs[: r.num_output_tokens]
        else:
            assert (r.output_token_ids, r.status) == (outputs, status), r


def test_tiny_pools_do_force_preemption() -> None:
    """The property tests above reach preemption (not only the easy paths)."""
    specs = tuple(
        Spec(f"p{i}", (i, 2, 3), RequestLimits(max_tokens=12), i % 2, 0, None, False)
        for i in range(4)
    )
    config = SchedulerConfig(
        max_num_seqs=4, max_num_batched_tokens=16, max_model_len=16, headroom=NO_HEADROOM
    )
    workload = Workload(specs, block_size=2, num_blocks=9, config=config, prefix_caching=True)
    requests, preemptions = run(workload)
    assert preemptions > 0
    for spec in specs:
        assert requests[spec.request_id].output_token_ids == oracle(spec, 16)[0]
