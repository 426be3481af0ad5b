"""The EngineCore process: the engine's busy loop behind two ZMQ sockets.

It pulls `AddRequests` / `AbortRequests` / `Shutdown` from the API process, steps the core while
it has work and pushes a `CoreUpdate` (outputs, stats, timestamp) after every step that produced
something, and at least every heartbeat interval even when idle, so the API process can tell a
hung engine from an idle one. It never waits on HTTP: while requests are unfinished it polls its
input without blocking. It exits when told to, when the engine raises (after sending
`CoreFailed`), or when the API process is gone (it polls its parent's pid).

The frames carry the engine's own `EngineCoreRequest` / `EngineCoreOutput` (INTERFACES.md 4).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
import traceback
from typing import TYPE_CHECKING, Any

import zmq

from llmservice.runtime.server.core_protocol import (
    AbortRequests,
    AddRequests,
    CoreFailed,
    CoreReady,
    CoreRejected,
    CoreStats,
    CoreUpdate,
    MemoryBudget,
    Shutdown,
    decode,
    encode,
)

if TYPE_CHECKING:
    from llmservice.runtime.engine_core import EngineCore, EngineCoreOutput, EngineCoreRequest

logger = logging.getLogger("llmservice.engine_core")

# How long the final messages may take to reach the API process when the loop exits.
_LINGER_MS = 2000


def run_engine_core(
    engine_kwargs: dict[str, Any],
    input_address: str,
    output_address: str,
    parent_pid: int,
    heartbeat_interval_s: float,
) -> None:
    """Entry point of the spawned process: start the engine, then loop until told to stop."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Ctrl-C reaches the whole process group: the API process drains first, then sends Shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = zmq.Context()
    output = context.socket(zmq.PUSH)
    output.setsockopt(zmq.LINGER, _LINGER_MS)
    output.connect(output_address)
    inbox = context.socket(zmq.PULL)
    inbox.connect(input_address)
    code = 1
    try:
        core, ready = _start_engine(engine_kwargs)
        output.send(encode(ready))
        code = _CoreLoop(core, inbox, output, parent_pid, heartbeat_interval_s).run()
    except Exception:
        logger.exception("the engine core failed")
        output.send(encode(CoreFailed(traceback.format_exc())))
    finally:
        inbox.close(linger=0)
        output.close()
        context.term()
    # Skip the interpreter's teardown of torch (seconds of C finalizers): nothing is left to
    # flush but the log.
    logging.shutdown()
    os._exit(code)


def _start_engine(engine_kwargs: dict[str, Any]) -> tuple[EngineCore, CoreReady]:
    phases: list[tuple[str, float]] = []
    started = time.monotonic()
    from llmservice.runtime.engine_args import EngineArgs
    from llmservice.runtime.engine_core import EngineCore

    phases.append(("import engine", time.monotonic() - started))
    started = time.monotonic()
    config = EngineArgs(**engine_kwargs).create_engine_config()
    phases.append(("resolve config", time.monotonic() - started))
    started = time.monotonic()
    core = EngineCore(config)
    phases.append(("load weights + size KV cache", time.monotonic() - started))
    _quiet_garbage_collector()
    ready = CoreReady(
        pid=os.getpid(),
        phases=tuple(phases),
        memory=_memory_budget(core),
        max_model_len=core.max_model_len,
        max_num_seqs=config.scheduler.max_num_seqs,
        vocab_size=config.model.vocab_size,
    )
    return core, ready


def _quiet_garbage_collector() -> None:
    """Keep Python's collector off the step loop's tail latency.

    Everything alive after start-up (modules, the KV block pool: one object per block) lives as
    long as the process, so it is frozen out of every later collection; and each step allocates
    many short-lived objects, so the default generation-0 threshold (700) would run a collection
    every few steps. Measured on the scheduler micro-benchmark at 256 running requests: CPU p99
    per step 2.0-2.3 ms -> 0.8-0.9 ms (BENCHMARKS.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _memory_budget(core: EngineCore) -> MemoryBudget:
    """Where the memory went; read off the runner (the engine reports no budget of its own)."""
    runner = core.model_runner
    tensors = [*runner.model.parameters(), *runner.model.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    kv_bytes = sum(t.numel() * t.element_size() for t in runner.kv_caches)
    activations: int | None = None
    cache = core.config.cache
    if runner.device.type == "cuda" and cache.num_blocks_override is None:
        import torch

        # The KV cache got what `gpu_memory_utilization` left after the profiled peak.
        _, total = torch.cuda.mem_get_info(runner.device)
        activations = max(int(total * cache.gpu_memory_utilization) - weights - kv_bytes, 0)
    return MemoryBudget(
        weights_bytes=weights,
        activations_bytes=activations,
        kv_cache_bytes=kv_bytes,
        kv_cache_tokens=(runner.num_blocks - 1) * cache.block_size,  # block 0 is the null block
        max_model_len=core.max_model_len,
    )


class _CoreLoop:
    """The busy loop; one instance per process."""

    def __init__(
        self,
        core: EngineCore,
        inbox: zmq.Socket[bytes],
        output: zmq.Socket[bytes],
        parent_pid: int,
        heartbeat_interval_s: float,
    ) -> None:
        self._core = core
        self._inbox = inbox
        self._output = output
        self._parent_pid = parent_pid
        self._heartbeat_s = heartbeat_interval_s
        self._last_sent = 0.0
        # request id -> arrival, for requests not scheduled yet (their queue time is unknown)
        self._unscheduled: dict[str, float] = {}

    def run(self) -> int:
        """Loop until Shutdown (0) or the parent's death (1)."""
        while True:
            busy = self._core.has_unfinished_requests()
            timeout_ms = 0 if busy else int(self._heartbeat_s * 1000)
            if self._inbox.poll(timeout_ms) and not self._drain_inbox():
                return 0
            if os.getppid() != self._parent_pid:
                logger.error("the API process is gone; exiting")
                return 1
            now = time.monotonic()
            if self._core.has_unfinished_requests():
                outputs = self._core.step()
                scheduled = self._newly_scheduled(now)
                if outputs or scheduled:
                    self._send_update(outputs, scheduled)
                    continue
            if time.monotonic() - self._last_sent >= self._heartbeat_s:
                self._send_update([], {})

    def _drain_inbox(self) -> bool:
        """Handle every queued message; False when told to shut down."""
        while True:
            try:
                message = decode(self._inbox.recv(zmq.NOBLOCK))
            except zmq.Again:
                return True
            if isinstance(message, AddRequests):
                for request in message.requests:
                    self._add(request)
            elif isinstance(message, AbortRequests):
                self._core.abort_requests(message.request_ids)
                for request_id in message.request_ids:
                    self._unscheduled.pop(request_id, None)
            elif isinstance(message, Shutdown):
                return False
            else:
                raise TypeError(f"unexpected message {type(message).__name__}")

    def _add(self, request: EngineCoreRequest) -> None:
        try:
            self._core.add_request(request)
        except ValueError as error:
            self._output.send(encode(CoreRejected(request.request_id, str(error))))
            return
        self._unscheduled[request.request_id] = request.arrival_time

    def _newly_scheduled(self, step_started: float) -> dict[str, float]:
        """Requests that this step scheduled for the first time (for the queue-time metric)."""
        if not self._unscheduled:
            return {}
        get_request = self._core.scheduler.get_request
        scheduled = {}
        for request_id in list(self._unscheduled):
            request = get_request(request_id)
            if request is None or request.num_computed_tokens > 0:
                del self._unscheduled[request_id]
                scheduled[request_id] = step_started
        return scheduled

    def _send_update(self, outputs: list[EngineCoreOutput], scheduled: dict[str, float]) -> None:
        now = time.monotonic()
        self._output.send(encode(CoreUpdate(outputs, self._stats(), now, scheduled)))
        self._last_sent = now

    def _stats(self) -> CoreStats:
        stats = self._core.stats().scheduler
        return CoreStats(
            num_running=stats.num_running,
            num_waiting=stats.num_waiting,
            kv_cache_usage=stats.kv_cache_usage,
            num_preemptions_total=stats.num_preemptions_total,
            prefix_cache_queries=stats.prefix_cache_queries,
            prefix_cache_hits=stats.prefix_cache_hits,
        )
