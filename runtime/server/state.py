"""`ServerState`: whether the server is ready, draining or dead, and who may come in.

The lifecycle flips the flags; handlers ask `admit()` before submitting work, so a request
refused for load or shutdown never reaches the engine.
"""

from __future__ import annotations

from collections.abc import Callable

from llmservice.runtime.server.errors import overloaded


class ServerState:
    """Readiness, draining and the waiting-queue limit."""

    def __init__(
        self,
        max_waiting: int,
        retry_after_s: int,
        waiting_estimate: Callable[[], int],
    ) -> None:
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self._waiting_estimate = waiting_estimate
        self.loaded = False
        self.draining = False
        self.failure: str | None = None

    @property
    def ready(self) -> bool:
        """Readiness: loaded, healthy and not draining."""
        return self.loaded and not self.draining and self.failure is None

    def check_open(self) -> None:
        """503 with Retry-After while draining (or once the engine is gone)."""
        if self.draining:
            raise overloaded("the server is shutting down", self.retry_after_s)
        if self.failure is not None:
            raise overloaded("the engine is not available", self.retry_after_s)

    def admit(self, num_samples: int) -> None:
        """503 with Retry-After when `num_samples` more would overflow the waiting queue."""
        self.check_open()
        waiting = self._waiting_estimate()
        # An empty queue admits anything, so a large n is slow rather than refused forever.
        if waiting > 0 and waiting + num_samples > self.max_waiting:
            raise overloaded(
                f"too many requests waiting ({waiting} samples, limit {self.max_waiting})",
                self.retry_after_s,
            )
