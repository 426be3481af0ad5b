"""The messages between the API process and the EngineCore process.

Each ZMQ frame is one pickled message (both ends are our own processes, on ipc:// sockets in a
private temporary folder). Times are `time.monotonic()` seconds: CLOCK_MONOTONIC is one clock for
every process of the machine, so the API process compares them with its own.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmservice.runtime.engine_core import EngineCoreOutput, EngineCoreRequest


@dataclass(frozen=True, slots=True)
class CoreStats:
    """The engine's state after a step (what the gauges and engine counters show)."""

    num_running: int = 0
    """Requests in the running batch."""
    num_waiting: int = 0
    """Requests waiting to be scheduled (preempted ones included)."""
    kv_cache_usage: float = 0.0
    """Fraction of usable KV blocks in use (0..1)."""
    num_preemptions_total: int = 0
    """Preemptions since start."""
    prefix_cache_queries: int = 0
    """Prompt tokens looked up in the prefix cache since start."""
    prefix_cache_hits: int = 0
    """Prompt tokens found there since start."""


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """How the engine spends the device memory (logged at start-up)."""

    weights_bytes: int
    """Model weights."""
    activations_bytes: int | None
    """Room kept for the activations of the largest step (None where not profiled: CPU)."""
    kv_cache_bytes: int
    """The paged KV cache."""
    kv_cache_tokens: int
    """Tokens the KV cache holds."""
    max_model_len: int
    """Tokens per sequence at most."""

    @property
    def max_concurrency(self) -> float:
        """Sequences of max_model_len tokens that fit in the KV cache at once."""
        return self.kv_cache_tokens / self.max_model_len


@dataclass(frozen=True, slots=True)
class CoreReady:
    """core -> API, once: the model is loaded and the loop is about to start."""

    pid: int
    """The EngineCore process id."""
    phases: tuple[tuple[str, float], ...]
    """(phase, seconds) of the start-up, in order."""
    memory: MemoryBudget
    """Where the memory went."""
    max_model_len: int
    """Tokens per sequence at most (prompt + output)."""
    max_num_seqs: int
    """Sequences per step at most."""
    vocab_size: int
    """Token ids must be below this (the model's, which may exceed the tokenizer's)."""


@dataclass(frozen=True, slots=True)
class CoreUpdate:
    """core -> API, after every step with outputs and at least every heartbeat interval."""

    outputs: list[EngineCoreOutput]
    """New tokens and finishes of this step (empty for a heartbeat)."""
    stats: CoreStats
    """The engine's state after the step."""
    timestamp: float
    """When the step ended (monotonic): the heartbeat the API's watchdog checks."""
    scheduled: dict[str, float] = field(default_factory=dict)
    """Core request id -> when it was first scheduled (monotonic), for the queue-time metric."""


@dataclass(frozen=True, slots=True)
class CoreRejected:
    """core -> API: `add_request` refused a request (the API's checks should prevent this)."""

    request_id: str
    """The refused core request."""
    message: str
    """Why."""


@dataclass(frozen=True, slots=True)
class CoreFailed:
    """core -> API: the engine raised; the process exits after sending this."""

    message: str
    """The traceback."""


@dataclass(frozen=True, slots=True)
class AddRequests:
    """API -> core: new requests."""

    requests: list[EngineCoreRequest]
    """Added in order."""


@dataclass(frozen=True, slots=True)
class AbortRequests:
    """API -> core: stop these requests and free their KV blocks (idempotent)."""

    request_ids: list[str]
    """Core request ids; unknown or finished ones are ignored."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """API -> core: leave the loop and exit 0."""


def encode(message: Any) -> bytes:
    """One frame."""
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def decode(frame: bytes) -> Any:
    """The message of one frame (only ever from our own process pair)."""
    return pickle.loads(frame)
