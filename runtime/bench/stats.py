"""Latency statistics of the serving benchmark (W5): percentiles and the highest rate served.

Percentiles interpolate linearly between the two nearest samples (numpy's default, and what
vLLM's `bench serve` reports), so p99 of 400 samples is a mix of the 396th and 397th smallest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Summary:
    """Mean and percentiles of one latency, in milliseconds."""

    mean_ms: float
    """Arithmetic mean."""
    p50_ms: float
    """Median."""
    p99_ms: float
    """99th percentile."""

    @classmethod
    def of_seconds(cls, samples_s: Sequence[float]) -> Summary | None:
        """The summary of latencies given in seconds; None when there is no sample."""
        if not samples_s:
            return None
        values_ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
        p50, p99 = np.percentile(values_ms, [50.0, 99.0])
        return cls(mean_ms=float(values_ms.mean()), p50_ms=float(p50), p99_ms=float(p99))

    def as_fields(self, prefix: str) -> dict[str, float]:
        """`{prefix}_mean_ms`, `{prefix}_p50_ms`, `{prefix}_p99_ms`, rounded to 0.01 ms."""
        return {
            f"{prefix}_mean_ms": round(self.mean_ms, 2),
            f"{prefix}_p50_ms": round(self.p50_ms, 2),
            f"{prefix}_p99_ms": round(self.p99_ms, 2),
        }


def highest_rate_within_slo(
    p99_ttft_ms_by_rate: Sequence[tuple[float, float | None]], slo_ms: float
) -> float | None:
    """The highest rate up to which every rate kept its p99 TTFT under `slo_ms`.

    Rates are taken in increasing order and the first miss ends the search: a lucky pass at a
    higher rate after a miss does not count (the server did not "stay" under the SLO). A rate
    given as `None` (the caller judged it not served, e.g. requests failed) is a miss. None
    when even the lowest rate missed.
    """
    best: float | None = None
    for rate, p99_ms in sorted(p99_ttft_ms_by_rate):
        if p99_ms is None or p99_ms >= slo_ms:
            break
        best = rate
    return best
