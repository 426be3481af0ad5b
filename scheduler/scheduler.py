"""The continuous-batching scheduler: one rule per step under a token budget.

Every request has `num_computed_tokens` catching up to `num_tokens` (prompt + output). Each
step first gives running requests their next tokens (a decode token, or the next chunk of an
unfinished prefill), then admits waiting requests (prefix-cache hits first, the rest chunked to
the remaining budget), until `max_num_batched_tokens` or `max_num_seqs` is reached. When a
running request cannot get a block, the lowest-ranked running request (by policy) is preempted
by recompute: its blocks are freed and it is requeued at the front, to be recomputed later
(prompt and outputs so far) when blocks are free again.

Sync use, once per step: `out = schedule()`, run the model on `out`, `update(out, sampled)`.

Async use (overlapping step N+1's scheduling with step N on the device): `schedule(
async_output=True)` gives every chunk that samples an output placeholder on its request (a
token sampled on the device, not yet appended), which later `schedule()` calls count as a known
token: a decoding request gets its next 1-token chunk before its previous token is on the host,
and the runner feeds that position from the previous step's sampled-token tensor on the device.
`update(N)` appends the real token in place of the placeholder. Because `schedule()` advances
`num_computed_tokens` at once, prefill chunks simply continue. A request whose placeholder is
its last token under max_tokens or max_model_len gets no further chunk: it finishes at that
update whatever the token is. `update()` skips chunks of requests that finished, were aborted
or were preempted in the meantime (a request that stopped on a stop token at step N had one
extra token computed at N+1: it is dropped), and caches blocks only at update time (computed
means computed). A preempted request loses its placeholders: the in-flight token
is dropped and sampled again after the recompute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llmservice.kvcache import EMPTY_PREFIX, BlockHash, KVCacheManager
from llmservice.scheduler.config import SchedulerConfig
from llmservice.scheduler.headroom import Headroom
from llmservice.scheduler.output import ScheduledChunk, SchedulerOutput, SchedulerStats, new_chunk
from llmservice.scheduler.queue import make_waiting_queue
from llmservice.scheduler.request import Request, RequestStatus

_RUNNING = RequestStatus.RUNNING


class Scheduler:
    """Decides, step by step, which tokens of which requests the model computes."""

    def __init__(self, config: SchedulerConfig, kv_cache: KVCacheManager) -> None:
        capacity = kv_cache.num_usable_blocks * kv_cache.block_size
        if capacity < config.max_model_len:
            raise ValueError(
                f"the KV cache holds {capacity} tokens ({kv_cache.num_usable_blocks} blocks of "
                f"{kv_cache.block_size}), fewer than max_model_len={config.max_model_len}: "
                "lower max_model_len or give the cache more blocks"
            )
        self.config = config
        self.kv_cache = kv_cache
        self.waiting = make_waiting_queue(config.policy)
        """Waiting and preempted requests."""
        self.running: list[Request] = []
        """Requests holding blocks, in admission order."""
        self._requests: dict[str, Request] = {}
        self._finished_ids: list[str] = []
        self._num_preemptions_total = 0
        self._headroom = Headroom(config.headroom)
        # First prompt block hash -> the admitted request computing it (not cached yet).
        self._uncached_first_blocks: dict[BlockHash, str] = {}

    def add_request(self, request: Request) -> None:
        """Queue a new request; ValueError if it can never run."""
        rid = request.request_id
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"request_id must be a non-empty str, got {rid!r}")
        if rid in self._requests:
            raise ValueError(f"request {rid!r} is already in the scheduler")
        num_prompt = request.num_prompt_tokens
        if num_prompt == 0:
            raise ValueError(f"request {rid!r} has an empty prompt")
        if num_prompt + 1 > self.config.max_model_len:
            raise ValueError(
                f"request {rid!r}: the prompt has {num_prompt} tokens, which leaves no room for "
                f"an output token within max_model_len={self.config.max_model_len}"
            )
        if request.status is not RequestStatus.WAITING or request.num_tokens != num_prompt:
            raise ValueError(f"request {rid!r} was already scheduled once; make a new Request")
        if isinstance(request.priority, bool) or not isinstance(request.priority, int):
            raise ValueError(f"request {rid!r}: priority must be an int, got {request.priority!r}")
        if isinstance(request.arrival_time, bool) or not isinstance(
            request.arrival_time, (int, float)
        ):
            raise ValueError(
                f"request {rid!r}: arrival_time must be a number, got {request.arrival_time!r}"
            )
        try:
            hash(request.extra_keys)
        except TypeError:
            raise ValueError(
                f"request {rid!r}: extra_keys must be a tuple of hashable values"
            ) from None
        self._requests[rid] = request
        self.waiting.add(request)

    def get_request(self, request_id: str) -> Request | None:
        """The unfinished request with this id (None once it finished or was aborted)."""
        return self._requests.get(request_id)

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    def stats(self) -> SchedulerStats:
        kv = self.kv_cache
        return SchedulerStats(
            num_running=len(self.running),
            num_waiting=len(self.waiting),
            kv_cache_usage=kv.usage,
            num_preemptions_total=self._num_preemptions_total,
            prefix_cache_queries=kv.prefix_cache_queries,
            prefix_cache_hits=kv.prefix_cache_hits,
        )

    def schedule(self, async_output: bool = False) -> SchedulerOutput:
        """Choose this step's chunks, allocating blocks and preempting as needed.

        Advances each scheduled request's `num_computed_tokens` by its chunk right away. With
        `async_output`, each chunk that samples also gives its request an output placeholder
        (the token is sampled on the device; `update()` appends it).
        """
        budget = self.config.max_num_batched_tokens
        chunks: dict[str, ScheduledChunk] = {}
        preempted: list[str] = []
        budget = self._schedule_running(budget, chunks, preempted)
        # NOTE: no admission in a step that preempted: blocks are short, and a preempted request
        # must not be re-admitted (and recomputed) in the very step that evicted it.
        if not preempted:
            budget = self._admit_waiting(budget, chunks)
        self._headroom.step(bool(preempted))
        if async_output:
            requests = self._requests
            for chunk in chunks.values():
                if chunk.samples:
                    requests[chunk.request_id].num_output_placeholders += 1
        finished_ids = tuple(self._finished_ids)
        self._finished_ids.clear()
        return SchedulerOutput(
            chunks=tuple(chunks.values()),
            num_batched_tokens=self.config.max_num_batched_tokens - budget,
            preempted_ids=tuple(preempted),
            finished_ids=finished_ids,
        )

    def update(self, output: SchedulerOutput, sampled: Mapping[str, int]) -> list[Request]:
        """Record what the model computed and sampled for `output`; return the finished requests.

        Caches the newly computed full blocks, appends the sampled token of each chunk with
        `samples` (key: request_id), and finishes requests on a stop token (once min_tokens
        output tokens exist), on max_tokens or on max_model_len, freeing their blocks. Chunks
        whose request finished, was aborted or was preempted since `schedule()` are skipped.
        """
        finished: list[Request] = []
        kv = self.kv_cache
        requests = self._requests
        max_model_len = self.config.max_model_len
        try:
            for chunk in output.chunks:
                request = requests.get(chunk.request_id)
                if request is None or request.status is not _RUNNING:
                    continue
                end = chunk.num_computed_tokens + chunk.num_new_tokens
                kv.cache_computed_blocks(request, end)
                if self._uncached_first_blocks and chunk.num_computed_tokens < kv.block_size <= end:
                    self._forget_leader(request)  # its first block is cached now
                if not chunk.samples:
                    continue
                if request.num_tokens != end:
                    raise ValueError(
                        f"request {chunk.request_id!r} already has {request.num_tokens} tokens, "
                        f"its chunk ends at {end}: update() applied twice or out of order"
                    )
                token = sampled.get(chunk.request_id)
                if token is None:
                    raise ValueError(f"no sampled token for request {chunk.request_id!r}")
                request.append_output_token(token)
                limits = request.limits
                # Cheap test first: most tokens of most requests finish nothing.
                if (
                    token in limits.stop_token_ids
                    or len(request.output_token_ids) >= limits.max_tokens
                    or request.num_tokens >= max_model_len
                ):
                    status = self._stop_status(request, token)
                    if status is not None:
                        self._finish(request, status)
                        finished.append(request)
        finally:
            if finished:
                self.running = [r for r in self.running if r.status is _RUNNING]
        return finished

    def finish_requests(self, request_ids: Iterable[str], status: RequestStatus) -> list[Request]:
        """Finish requests in any state (aborts, stop strings); unknown or finished ids are
        ignored. Returns the requests finished by this call."""
        if not status.is_finished:
            raise ValueError(f"status must be a finished status, got {status}")
        if isinstance(request_ids, str):
            request_ids = (request_ids,)
        finished: list[Request] = []
        for rid in request_ids:
            request = self._requests.get(rid)
            if request is None:
                continue
            if request.status is not _RUNNING:
                self.waiting.remove(request)
            self._finish(request, status)
            finished.append(request)
        if finished:
            self.running = [r for r in self.running if r.status is _RUNNING]
        return finished

    def _schedule_running(
        self, budget: int, chunks: dict[str, ScheduledChunk], preempted: list[str]
    ) -> int:
        """Give running requests their next tokens; returns the budget left."""
        kv = self.kv_cache
        running = self.running
        max_model_len = self.config.max_model_len
        i = 0
        while i < len(running) and budget > 0:
            request = running[i]
            start = request.num_computed_tokens
            # A placeholder is a token sampled on the device and not appended yet (async).
            placeholders = request.num_output_placeholders
            if placeholders and (
                len(request.output_token_ids) + placeholders >= request.limits.max_tokens
                or request.num_tokens + placeholders >= max_model_len
            ):
                # Its last token is in flight: the update finishes it whatever the token is,
                # so a chunk for the next one would be computed and dropped (at W3's 4K
                # contexts, a whole decode's K/V read per request).
                i += 1
                continue
            remaining = request.num_tokens + placeholders - start
            num_new = remaining if remaining <= budget else budget
            if num_new <= 0:
                i += 1
                continue
            block_ids = kv.allocate_slots(request, num_new)
            while block_ids is None:
                victim_index = self._victim_index()
                victim = running.pop(victim_index)
                budget += self._preempt(victim, chunks)
                preempted.append(victim.request_id)
                if victim is request:
                    break
                if victim_index < i:
                    i -= 1
                block_ids = kv.allocate_slots(request, num_new)
            if block_ids is None:
                continue  # it preempted itself; running[i] is now the next request
            # The hot path of a step: `_chunk` inlined (one call less per running request).
            request.num_computed_tokens = start + num_new
            rid = request.request_id
            chunks[rid] = new_chunk(rid, start, num_new, block_ids, num_new == remaining)
            budget -= num_new
            i += 1
        return budget

    def _admit_waiting(self, budget: int, chunks: dict[str, ScheduledChunk]) -> int:
        """Admit waiting requests in queue order while budget, seats and blocks allow; the
        blocks left free must cover the headroom of everything admitted (headroom.py)."""
        kv = self.kv_cache
        reserved: int | None = None  # blocks the running requests keep free; computed lazily
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting.peek()
            reuse = request.limits.reuse_cached_prefix
            prefix = kv.find_cached_prefix(request) if reuse else EMPTY_PREFIX
            if reuse and not prefix.blocks and self._prefix_being_computed(request):
                break  # its prefix will be cached in a step or two: no computing it twice
            num_new = min(request.num_tokens - prefix.num_tokens, budget)
            # The prompt's own blocks first: a cheap test before the O(running) headroom sum.
            if not kv.can_allocate(request, num_new, prefix):
                break  # the head waits for blocks; nobody overtakes it
            if reserved is None:
                reserved = sum(self._future_blocks(r, r.num_computed_tokens) for r in self.running)
            end = prefix.num_tokens + num_new
            own = self._future_blocks(request, end)
            # An empty batch always admits its head (its prompt fits), so nothing waits forever.
            keep_free = reserved + own if self.running else 0
            block_ids = kv.allocate_slots(request, num_new, prefix, keep_free)
            if block_ids is None:
                break
            reserved += own
            if not prefix.blocks and request.block_hashes:
                self._uncached_first_blocks.setdefault(request.block_hashes[0], request.request_id)
            self.waiting.pop()
            if request.num_preemptions == 0:
                request.num_cached_tokens = prefix.num_tokens
            request.num_computed_tokens = prefix.num_tokens
            request.status = _RUNNING
            self.running.append(request)
            chunks[request.request_id] = self._chunk(request, num_new, block_ids)
            budget -= num_new
        return budget

    def _prefix_being_computed(self, request: Request) -> bool:
        """Whether a running request is computing the first prompt block this one starts with
        (admitted in this step or the last ones, so the block is not cached yet).

        Requests that share a prompt prefix and arrive together would otherwise each compute
        it (W4: 8 copies of a 2048-token prefix in its first step); waiting for the first one
        turns the others' prefixes into cache hits. Entries of leaders that stopped running
        are dropped here; `find_cached_prefix` finds the block once the leader cached it.
        """
        if not request.block_hashes:  # no full block to share (or prefix caching off)
            return False
        first = request.block_hashes[0]
        leader_id = self._uncached_first_blocks.get(first)
        if leader_id is None:
            return False
        leader = self._requests.get(leader_id)
        if leader is None or leader.status is not _RUNNING:
            del self._uncached_first_blocks[first]
            return False
        return True

    def _forget_leader(self, request: Request) -> None:
        """The request's first block is cached now (or never will be): nobody waits for it."""
        if request.block_hashes:
            first = request.block_hashes[0]
            if self._uncached_first_blocks.get(first) == request.request_id:
                del self._uncached_first_blocks[first]

    def _future_blocks(self, request: Request, allocated_end: int) -> int:
        """Blocks the request will still need past the blocks of its first `allocated_end`
        tokens, under the current headroom ratio."""
        remaining_prompt = max(request.num_prompt_tokens - allocated_end, 0)
        produced = request.num_output_tokens + request.num_output_placeholders
        remaining_output = min(
            request.limits.max_tokens - produced,
            self.config.max_model_len - max(allocated_end, request.num_tokens),
        )
        future = self._headroom.reserve_tokens(remaining_prompt, max(remaining_output, 0))
        bs = self.kv_cache.block_size
        return -(-(allocated_end + future) // bs) - -(-allocated_end // bs)

    @staticmethod
    def _chunk(request: Request, num_new: int, block_ids: tuple[int, ...]) -> ScheduledChunk:
        """Record the chunk and advance the request past it."""
        start = request.num_computed_tokens
        end = start + num_new
        request.num_computed_tokens = end
        return new_chunk(request.request_id, start, num_new, block_ids, end == request.num_tokens)

    def _victim_index(self) -> int:
        """Index in `running` of the request to preempt: the lowest priority (under the
        "priority" policy), then the latest arrival, then the latest admitted."""
        running = self.running
        if self.config.policy == "priority":
            return max(
                range(len(running)),
                key=lambda k: (running[k].priority, running[k].arrival_time, k),
            )
        return max(range(len(running)), key=lambda k: (running[k].arrival_time, k))

    def _preempt(self, request: Request, chunks: dict[str, ScheduledChunk]) -> int:
        """Preempt a request already removed from `running`; returns the budget it gives back."""
        chunk = chunks.pop(request.request_id, None)
        self.kv_cache.free(request.request_id)
        request.status = RequestStatus.PREEMPTED
        self._forget_leader(request)
        request.num_computed_tokens = 0
        request.num_output_placeholders = 0  # the in-flight token is dropped, sampled again
        request.num_preemptions += 1
        self._num_preemptions_total += 1
        self.waiting.requeue(request)
        return chunk.num_new_tokens if chunk is not None else 0

    def _stop_status(self, request: Request, token: int) -> RequestStatus | None:
        """The finished status the just-appended `token` leads to, if any."""
        limits = request.limits
        num_output = len(request.output_token_ids)
        if token in limits.stop_token_ids and num_output >= limits.min_tokens:
            request.stop_reason = token
            return RequestStatus.FINISHED_STOPPED
        if num_output >= limits.max_tokens or request.num_tokens >= self.config.max_model_len:
            return RequestStatus.FINISHED_LENGTH
        return None

    def _finish(self, request: Request, status: RequestStatus) -> None:
        """Release a request (the caller takes it out of `running` or `waiting`)."""
        request.status = status
        self._forget_leader(request)
        self.kv_cache.free(request.request_id)
        del self._requests[request.request_id]
        self._finished_ids.append(request.request_id)
