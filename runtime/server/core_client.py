"""The API process's handle on the EngineCore process.

`CoreClient` spawns the core (multiprocessing "spawn": torch and fork do not mix), binds the two
ipc:// sockets in a private temporary folder, and runs one task that reads every message and hands
it to the `CoreListener` (the request router). Sending never blocks the event loop (unbounded
queues, non-blocking sends). The core's death is seen at once through the process
sentinel; a hang through the heartbeat the lifecycle's watchdog checks (`seconds_since_update`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Any, Protocol

import zmq
import zmq.asyncio

from llmservice.runtime.server.core_process import run_engine_core
from llmservice.runtime.server.core_protocol import (
    AbortRequests,
    AddRequests,
    CoreFailed,
    CoreReady,
    CoreRejected,
    CoreUpdate,
    Shutdown,
    decode,
    encode,
)

if TYPE_CHECKING:
    from llmservice.runtime.engine_core import EngineCoreRequest

logger = logging.getLogger(__name__)


class EngineDeadError(RuntimeError):
    """The EngineCore process died, hung or failed; no request can be served any more."""


class CoreListener(Protocol):
    """Receives what the core reports (called on the event loop, in order)."""

    def on_update(self, update: CoreUpdate) -> None:
        """Outputs and stats of a step, or a heartbeat."""

    def on_rejected(self, request_id: str, message: str) -> None:
        """The core refused a core request (`add_request` raised ValueError)."""

    def on_failure(self, message: str) -> None:
        """The engine died, hung or failed: every unfinished request must end."""


class CoreClient:
    """Start, feed and watch one EngineCore process."""

    def __init__(self, engine_kwargs: dict[str, Any], heartbeat_interval_s: float) -> None:
        self._engine_kwargs = engine_kwargs
        self._listener: CoreListener | None = None
        self._heartbeat_s = heartbeat_interval_s
        self._stopping = False
        self._failure: str | None = None
        self._last_update = time.monotonic()
        self._socket_dir = tempfile.mkdtemp(prefix="llmservice-core-")
        self._context = zmq.Context()
        self._to_core = self._context.socket(zmq.PUSH)
        self._from_core = zmq.asyncio.Context.shadow(self._context).socket(zmq.PULL)
        for socket in (self._to_core, self._from_core):
            socket.setsockopt(zmq.SNDHWM, 0)
            socket.setsockopt(zmq.RCVHWM, 0)
            socket.setsockopt(zmq.LINGER, 0)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._reader: asyncio.Task[None] | None = None
        self._exited = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int | None:
        """The EngineCore process id (None before start)."""
        return None if self._process is None else self._process.pid

    @property
    def failure(self) -> str | None:
        """Why the engine is unusable (None while it is healthy)."""
        return self._failure

    def seconds_since_update(self) -> float:
        """Time since the core last reported (its heartbeat)."""
        return time.monotonic() - self._last_update

    async def start(self) -> CoreReady:
        """Spawn the core and wait until it has loaded the model; EngineDeadError if it fails."""
        input_address = f"ipc://{self._socket_dir}/input"
        output_address = f"ipc://{self._socket_dir}/output"
        self._to_core.bind(input_address)
        self._from_core.bind(output_address)
        process = multiprocessing.get_context("spawn").Process(
            target=run_engine_core,
            args=(
                self._engine_kwargs,
                input_address,
                output_address,
                os.getpid(),
                self._heartbeat_s,
            ),
            name="EngineCore",
            daemon=True,
        )
        process.start()
        self._process = process
        loop = asyncio.get_running_loop()
        loop.add_reader(process.sentinel, self._on_process_exit)
        first = asyncio.ensure_future(self._from_core.recv())
        await asyncio.wait({first, self._exited}, return_when=asyncio.FIRST_COMPLETED)
        if not first.done():
            first.cancel()
            raise EngineDeadError(f"the engine core exited during start-up: {self._failure}")
        message = decode(first.result())
        if isinstance(message, CoreFailed):
            raise EngineDeadError(f"the engine core failed to start:\n{message.message}")
        if not isinstance(message, CoreReady):
            raise EngineDeadError(f"unexpected first message {type(message).__name__}")
        self._last_update = time.monotonic()
        return message

    def listen(self, listener: CoreListener) -> None:
        """Start handing the core's messages to `listener` (after `start`)."""
        self._listener = listener
        self._reader = asyncio.create_task(self._read_loop(listener), name="core-reader")

    def add(self, requests: list[EngineCoreRequest]) -> None:
        """Send requests to the core; EngineDeadError if it is gone."""
        if self._failure is not None:
            raise EngineDeadError(self._failure)
        self._send(AddRequests(requests))

    def abort(self, request_ids: list[str]) -> None:
        """Stop core requests and free their KV blocks (the core ignores unknown ids)."""
        if request_ids and self._failure is None:
            with contextlib.suppress(EngineDeadError):
                self._send(AbortRequests(request_ids))

    def mark_hung(self, message: str) -> None:
        """The watchdog saw no heartbeat: fail every request and kill the core."""
        self._fail(message)
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """Ask the core to exit (kill it if it does not) and release the sockets."""
        self._stopping = True
        if self._reader is not None:
            self._reader.cancel()
        process = self._process
        if process is not None and process.is_alive():
            with contextlib.suppress(zmq.ZMQError):
                self._to_core.send(encode(Shutdown()), zmq.NOBLOCK)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited), timeout_s)
            if process.is_alive():
                process.kill()
        if process is not None:
            asyncio.get_running_loop().remove_reader(process.sentinel)
            process.join(1.0)
        self._to_core.close()
        self._from_core.close()
        self._context.term()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _send(self, message: object) -> None:
        try:
            self._to_core.send(encode(message), zmq.NOBLOCK)
        except zmq.Again:  # a PUSH socket with no peer: the core is gone
            self._fail("the engine core is not connected")
            raise EngineDeadError(self._failure) from None

    async def _read_loop(self, listener: CoreListener) -> None:
        try:
            while True:
                message = decode(await self._from_core.recv())
                self._last_update = time.monotonic()
                if isinstance(message, CoreUpdate):
                    listener.on_update(message)
                elif isinstance(message, CoreRejected):
                    listener.on_rejected(message.request_id, message.message)
                elif isinstance(message, CoreFailed):
                    self._fail(f"the engine core failed:\n{message.message}")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug here must not leave requests waiting forever
            logger.exception("reading the engine core's messages failed")
            self._fail(f"reading the engine core's messages failed: {error!r}")

    def _on_process_exit(self) -> None:
        process = self._process
        if process is not None:
            asyncio.get_running_loop().remove_reader(process.sentinel)
            process.join()  # it has exited (the sentinel fired): this only reaps it
            if not self._stopping:
                self._fail(f"the engine core process exited with code {process.exitcode}")
        if not self._exited.done():
            self._exited.set_result(None)

    def _fail(self, message: str) -> None:
        if self._failure is not None:
            return
        self._failure = message
        logger.error("%s", message)
        if self._listener is not None:
            self._listener.on_failure(message)
