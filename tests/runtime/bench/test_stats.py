"""Latency percentiles and the highest rate served within the TTFT SLO."""

from __future__ import annotations

import pytest

from llmservice.runtime.bench.stats import Summary, highest_rate_within_slo


def test_summary_reports_milliseconds_with_interpolated_percentiles() -> None:
    summary = Summary.of_seconds([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert summary is not None
    assert summary.mean_ms == pytest.approx(50.5)
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p99_ms == pytest.approx(99.01)
    assert summary.as_fields("ttft") == {
        "ttft_mean_ms": 50.5,
        "ttft_p50_ms": 50.5,
        "ttft_p99_ms": 99.01,
    }


def test_no_samples_give_no_summary() -> None:
    assert Summary.of_seconds([]) is None


def test_highest_rate_stops_at_the_first_miss() -> None:
    by_rate = [(16.0, 400.0), (4.0, 100.0), (8.0, 200.0), (24.0, 1200.0), (32.0, 900.0)]
    # 32 req/s passes again, but the server did not stay under the SLO past 16.
    assert highest_rate_within_slo(by_rate, slo_ms=1000.0) == 16.0


def test_a_rate_without_a_figure_is_a_miss_and_nothing_served_is_none() -> None:
    assert highest_rate_within_slo([(4.0, 10.0), (8.0, None), (16.0, 10.0)], 1000.0) == 4.0
    assert highest_rate_within_slo([(4.0, 1000.0)], 1000.0) is None
    assert highest_rate_within_slo([], 1000.0) is None
