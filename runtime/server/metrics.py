"""Prometheus metrics of the server (`llmservice:` names, vLLM's `vllm:` meanings).

Each server owns its own `CollectorRegistry`. Gauges and engine counters (running, waiting,
KV usage, preemptions, prefix cache) are read from the EngineCore's latest `CoreStats` when
scraped; token counters and latency histograms are recorded by the API process as outputs
arrive (`RequestClock` per core request).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llmservice.runtime.server.core_protocol import CoreStats

# Seconds; they reach past 300 s so long generations still land in a finite bucket.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
    0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0,
    320.0, 640.0,
)  # fmt: skip
# Tokens per request: vLLM's 1-2-5 series.
TOKEN_BUCKETS: tuple[float, ...] = tuple(float(m * 10**e) for e in range(7) for m in (1, 2, 5))
PREFIX = "llmservice:"
FINISH_REASONS = ("stop", "length", "abort")

# The `_created` series double every counter's lines and nothing reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call,unused-ignore]


@dataclass(slots=True)
class RequestClock:
    """The times of one core request (monotonic seconds)."""

    arrival: float
    """When the API process accepted it."""
    first_token: float | None = None
    """When the core produced its first token."""
    last_token: float | None = None
    """When the core produced its latest token."""
    scheduled: float | None = None
    """When the core first scheduled it."""
    num_prompt_tokens: int = 0
    """Its prompt length (known with its first token)."""
    num_generation_tokens: int = 0
    """Tokens generated so far."""


class ServerMetrics:
    """The server's metrics and the one place that records them."""

    def __init__(self, latency_buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        self.registry = CollectorRegistry()
        self._stats = CoreStats()
        buckets = tuple(latency_buckets)
        self._prompt_tokens = Counter(
            PREFIX + "prompt_tokens", "Prefill tokens processed.", registry=self.registry
        )
        self._generation_tokens = Counter(
            PREFIX + "generation_tokens", "Generation tokens produced.", registry=self.registry
        )
        self._success = Counter(
            PREFIX + "request_success",
            "Finished requests, by finish reason.",
            ["finished_reason"],
            registry=self.registry,
        )
        for reason in FINISH_REASONS:
            self._success.labels(reason)  # export zeros so rates work from the start
        self._ttft = self._histogram("time_to_first_token_seconds", "Time to first token.", buckets)
        self._itl = self._histogram("inter_token_latency_seconds", "Time between tokens.", buckets)
        self._e2e = self._histogram("e2e_request_latency_seconds", "End-to-end latency.", buckets)
        self._queue = self._histogram(
            "request_queue_time_seconds", "Time waiting before first scheduled.", buckets
        )
        # Per finished request, as vLLM's histograms of the same names.
        self._prefill = self._histogram(
            "request_prefill_time_seconds", "First scheduled to first token.", buckets
        )
        self._decode = self._histogram(
            "request_decode_time_seconds", "First token to last token.", buckets
        )
        self._inference = self._histogram(
            "request_inference_time_seconds", "First scheduled to finished.", buckets
        )
        self._request_prompt = self._histogram(
            "request_prompt_tokens", "Prompt tokens per request.", TOKEN_BUCKETS
        )
        self._request_generation = self._histogram(
            "request_generation_tokens", "Generated tokens per request.", TOKEN_BUCKETS
        )
        self.registry.register(_CoreStatsCollector(self))

    def _histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(PREFIX + name, doc, buckets=buckets, registry=self.registry)

    @property
    def core_stats(self) -> CoreStats:
        """The EngineCore's latest reported state."""
        return self._stats

    def set_core_stats(self, stats: CoreStats) -> None:
        """Remember the engine state of the latest step."""
        self._stats = stats

    def record_tokens(
        self, clock: RequestClock, num_prompt_tokens: int, num_new_tokens: int, now: float
    ) -> None:
        """Count a core request's new tokens made at `now`; TTFT once, then inter-token gaps."""
        if num_new_tokens <= 0:
            return
        self._generation_tokens.inc(num_new_tokens)
        clock.num_generation_tokens += num_new_tokens
        if clock.first_token is None:
            clock.first_token = now
            clock.num_prompt_tokens = num_prompt_tokens
            self._prompt_tokens.inc(num_prompt_tokens)
            self._ttft.observe(max(0.0, now - clock.arrival))
        elif clock.last_token is not None:
            self._itl.observe(max(0.0, now - clock.last_token))
        clock.last_token = now

    def record_queue_time(self, clock: RequestClock, scheduled_at: float) -> None:
        """A core request was first scheduled at `scheduled_at`."""
        clock.scheduled = scheduled_at
        self._queue.observe(max(0.0, scheduled_at - clock.arrival))

    def record_finish(self, clock: RequestClock, reason: str, now: float) -> None:
        """A core request finished ("stop", "length" or "abort")."""
        self._success.labels(reason).inc()
        self._e2e.observe(max(0.0, now - clock.arrival))
        if clock.first_token is None:
            return  # aborted before its first token: no prefill or decode to time
        self._request_prompt.observe(clock.num_prompt_tokens)
        self._request_generation.observe(clock.num_generation_tokens)
        if clock.scheduled is not None:
            self._prefill.observe(max(0.0, clock.first_token - clock.scheduled))
            self._inference.observe(max(0.0, now - clock.scheduled))
        self._decode.observe(max(0.0, (clock.last_token or clock.first_token) - clock.first_token))

    def render(self) -> bytes:
        """The text exposition format."""
        return prometheus_client.generate_latest(self.registry)


class _CoreStatsCollector:
    """Exposes the latest `CoreStats` at scrape time (the core keeps the running totals)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        stats = self._metrics.core_stats
        yield GaugeMetricFamily(
            PREFIX + "num_requests_running", "Requests in the running batch.", stats.num_running
        )
        yield GaugeMetricFamily(
            PREFIX + "num_requests_waiting",
            "Requests waiting (preempted ones included).",
            stats.num_waiting,
        )
        yield GaugeMetricFamily(
            PREFIX + "kv_cache_usage_perc", "KV cache usage (1 = full).", stats.kv_cache_usage
        )
        yield CounterMetricFamily(
            PREFIX + "num_preemptions", "Preemptions.", stats.num_preemptions_total
        )
        yield CounterMetricFamily(
            PREFIX + "prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache.",
            stats.prefix_cache_queries,
        )
        yield CounterMetricFamily(
            PREFIX + "prefix_cache_hits",
            "Prompt tokens found in the prefix cache.",
            stats.prefix_cache_hits,
        )
