"""Polling with a deadline: the only way the harness and the tests wait (no fixed sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(TimeoutError):
    """A condition did not hold before its deadline; the message says what was awaited."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    explain: Callable[[], str] | None = None,
) -> T:
    """Calls `probe` until it returns something other than None/False and returns that.

    On timeout raises WaitTimeoutError naming `what`, the last exception the probe raised (if
    any) and `explain()`'s text (e.g. the relevant `kubectl get -o yaml`).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    delay = min(interval, 0.05)
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except Exception as error:  # the probe's failures are retried until the deadline
            last_error = error
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:.0f} s waiting for {what}"
            if last_error is not None:
                message += f"\nlast error: {type(last_error).__name__}: {last_error}"
            if explain is not None:
                try:
                    message += "\n" + explain()
                except Exception as error:
                    message += f"\n(could not gather details: {error})"
            raise WaitTimeoutError(message)
        time.sleep(delay)
        delay = min(delay * 2, interval)
