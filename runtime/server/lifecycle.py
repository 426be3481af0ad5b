"""The server's life: start-up phases, serving, SIGTERM drain, and the engine watchdog.

Start-up binds the port first (a busy port fails at once, not after a model load), starts the
EngineCore process while the tokenizer loads, logs the time of each phase and the memory
budget, then serves. SIGTERM (or Ctrl-C) drains: /ready turns 503, new requests get 503 with
Retry-After, requests in flight run until --shutdown-timeout, the rest end with finish_reason
"abort", and the process exits 0. The watchdog turns a dead or silent engine into /health 503
and a non-zero exit, instead of a server that hangs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmservice.runtime.server.app import access_logger, build_app
from llmservice.runtime.server.config import ServerConfig
from llmservice.runtime.server.core_client import CoreClient, EngineDeadError
from llmservice.runtime.server.core_protocol import CoreReady
from llmservice.runtime.server.metrics import ServerMetrics
from llmservice.runtime.server.router import RequestRouter
from llmservice.runtime.server.runner import EnvelopeRunner
from llmservice.runtime.server.serving_common import ServingContext
from llmservice.runtime.server.state import ServerState

if TYPE_CHECKING:
    from llmservice.runtime.output_processor import OutputProcessor
    from llmservice.runtime.tokenizer import Tokenizer

logger = logging.getLogger("llmservice.server")

# After the engine fails, /health answers 503 this long before the process exits, so a probe
# (and a human with curl) can see why.
_FAILURE_GRACE_S = 2.0
# How long aiohttp waits for handlers to return after the drain (they end fast: all aborted).
_HANDLER_GRACE_S = 5.0


class Lifecycle:
    """Runs one server from start-up to exit; `run()` returns the exit code."""

    def __init__(self, config: ServerConfig, engine_kwargs: dict[str, Any]) -> None:
        self._config = config
        self._engine_kwargs = engine_kwargs
        self._stop = asyncio.Event()
        self._signals = 0

    async def run(self) -> int:
        """Start, serve until SIGTERM or an engine failure, shut down; the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            listener = _bind(self._config)
        except OSError as error:
            logger.error("cannot listen on %s:%d: %s", self._config.host, self._config.port, error)
            return 1
        client = CoreClient(self._engine_kwargs, self._config.heartbeat_interval_s)
        try:
            code = await self._serve(listener, client)
        finally:
            await client.shutdown()
        logger.info("stopped (exit code %d)", code)
        return code

    async def _serve(self, listener: socket.socket, client: CoreClient) -> int:
        phases: list[tuple[str, float]] = []
        started = time.monotonic()
        # The tokenizer and the output processor import transformers and torch (seconds): load
        # them in a thread while the engine core process starts, rather than before it.
        frontend = asyncio.ensure_future(asyncio.to_thread(_load_frontend, self._config.model))
        try:
            ready = await self._until_stopped(client.start())
        except EngineDeadError as error:
            logger.error("%s", error)
            return 1
        if ready is None:  # signalled during start-up
            return 0
        phases.append(("engine core ready (wall)", time.monotonic() - started))
        try:
            tokenizer, processor, load_seconds = await frontend
        except Exception:
            logger.exception("loading the tokenizer failed")
            return 1
        phases.append(("API process: tokenizer (in parallel)", load_seconds))
        started = time.monotonic()
        metrics = ServerMetrics(self._config.latency_buckets)
        router = RequestRouter(processor, metrics)
        client.listen(router)
        router.attach(client)
        state = ServerState(
            self._config.max_waiting_requests or 4 * ready.max_num_seqs,
            self._config.retry_after_s,
            # Samples beyond max_num_seqs must wait; the core's own count (which also sees KV
            # pressure) lags by a step, so the larger of the two.
            lambda: max(
                router.num_in_flight - ready.max_num_seqs, metrics.core_stats.num_waiting, 0
            ),
        )
        context = ServingContext(
            config=self._config,
            tokenizer=tokenizer,
            router=router,
            state=state,
            max_model_len=ready.max_model_len,
            vocab_size=ready.vocab_size,
            scheduling_policy=str(self._engine_kwargs.get("scheduling_policy", "fcfs")),
        )
        runner = EnvelopeRunner(
            build_app(context, metrics),
            access_log_class=access_logger(self._config.log_probe_requests),
            max_line_size=self._config.max_header_bytes,
            max_field_size=self._config.max_header_bytes,
            shutdown_timeout=_HANDLER_GRACE_S,
        )
        await runner.setup()
        await web.SockSite(runner, listener).start()
        phases.append(("HTTP server start", time.monotonic() - started))
        state.loaded = True
        _log_startup(ready, phases, self._config)
        watchdog = asyncio.create_task(self._watch(client, state))
        await self._stop.wait()
        watchdog.cancel()
        if state.failure is None:
            await self._drain(router, state, client)
        if client.failure is not None:
            state.failure = client.failure
            await asyncio.sleep(_FAILURE_GRACE_S)  # /health answers 503 meanwhile
        await runner.cleanup()
        await router.close()
        return 0 if client.failure is None else 1

    async def _until_stopped(self, start: Any) -> CoreReady | None:
        """Await the core's start-up unless a signal comes first (then None)."""
        task = asyncio.ensure_future(start)
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            return task.result()  # type: ignore[no-any-return]
        task.cancel()
        return None

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info("%s received: draining", signal.Signals(signum).name)
        else:  # a second signal: stop waiting for requests in flight
            logger.warning("%s received again: aborting requests", signal.Signals(signum).name)
        self._stop.set()

    async def _drain(self, router: RequestRouter, state: ServerState, client: CoreClient) -> None:
        state.draining = True
        deadline = time.monotonic() + self._config.shutdown_timeout_s
        logger.info(
            "draining %d requests (up to %.0fs)",
            router.num_requests,
            self._config.shutdown_timeout_s,
        )
        while router.num_requests and client.failure is None and self._signals < 2:
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        if router.num_requests:
            logger.warning("aborting %d requests still running", router.num_requests)
            router.abort_all()

    async def _watch(self, client: CoreClient, state: ServerState) -> None:
        """Turn a dead or silent engine into a failure (health 503, exit 1)."""
        timeout = self._config.heartbeat_timeout_s
        while True:
            await asyncio.sleep(min(0.2, self._config.heartbeat_interval_s))
            if client.failure is None and client.seconds_since_update() > timeout:
                client.mark_hung(f"the engine core has not reported for {timeout:.0f}s (hung)")
            if client.failure is not None:
                state.failure = client.failure
                self._stop.set()
                return


def _load_frontend(model: str) -> tuple[Tokenizer | None, OutputProcessor, float]:
    """The tokenizer and the output processor of the API process, and the seconds it took."""
    started = time.monotonic()
    from llmservice.runtime.builtin import resolve_model_path
    from llmservice.runtime.output_processor import OutputProcessor
    from llmservice.runtime.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_folder(resolve_model_path(model))
    return tokenizer, OutputProcessor(tokenizer), time.monotonic() - started


def _bind(config: ServerConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    return socket.create_server((config.host, config.port), family=family, backlog=1024)


def _log_startup(ready: CoreReady, phases: list[tuple[str, float]], config: ServerConfig) -> None:
    for name, seconds in [*ready.phases, *phases]:
        logger.info("start-up phase %-30s %6.2fs", name, seconds)
    memory = ready.memory
    activations = (
        "not profiled on this device"
        if memory.activations_bytes is None
        else _size(memory.activations_bytes)
    )
    logger.info(
        "memory: weights %s, activations %s, KV cache %s = %d tokens; "
        "max concurrency at %d tokens per request: %.1f",
        _size(memory.weights_bytes),
        activations,
        _size(memory.kv_cache_bytes),
        memory.kv_cache_tokens,
        memory.max_model_len,
        memory.max_concurrency,
    )
    logger.info(
        "serving %s on http://%s:%d (engine core pid %d)",
        ", ".join(config.served_model_names),
        config.host,
        config.port,
        ready.pid,
    )


def _size(num_bytes: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes / 1024:.1f} KiB"
