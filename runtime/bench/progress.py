"""A small progress bar on stderr, so that stdout carries only the JSON result lines.

On a terminal it redraws one line in place (at most ten times a second); elsewhere (a CI log,
a file) it writes a line at each tenth of the work, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_REDRAW_INTERVAL_S = 0.1
_BAR_WIDTH = 30


class ProgressBar:
    """Counts finished units of work out of a known total and shows it on a stream."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._interactive = self._stream.isatty()
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_tenth = -1
        self._closed = False
        self._draw(force=True)

    def update(self, n: int = 1) -> None:
        """Record `n` more finished units."""
        self.done = min(self.total, self.done + n)
        self._draw(force=self.done == self.total)

    def close(self) -> None:
        """End the bar's line; later updates are ignored."""
        if self._closed:
            return
        self._draw(force=True)
        if self._interactive:
            self._stream.write("\n")
            self._stream.flush()
        self._closed = True

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _draw(self, force: bool) -> None:
        if self._closed:
            return
        now = time.monotonic()
        fraction = self.done / self.total if self.total else 1.0
        if self._interactive:
            if not force and now - self._last_draw < _REDRAW_INTERVAL_S:
                return
            filled = int(fraction * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self._stream.write(f"\r{self._text(bar, now)}")
        else:
            tenth = int(fraction * 10)
            if tenth == self._last_tenth:
                return
            self._last_tenth = tenth
            self._stream.write(f"{self._text('', now)}\n")
        self._last_draw = now
        self._stream.flush()

    def _text(self, bar: str, now: float) -> str:
        elapsed = now - self._start
        bar_part = f" [{bar}]" if bar else ""
        return f"{self.label}{bar_part} {self.done}/{self.total} ({elapsed:.1f} s)"
