"""W5: a running OpenAI-compatible server under Poisson load, one arrival rate after another.

Any server that speaks OpenAI's streaming `/v1/completions` with token-id prompts and
`ignore_eos` can be measured (ours, `vllm serve`): the command waits for it to answer
`GET /v1/models`, sends one warm-up request (which must succeed, or the run stops with its
error), then runs each rate with a fresh set of prompts (so a prefix cache never serves one rate
with another's prompts). Each rate is bounded: `num_requests` requests, each failing after
`request_timeout_s`. One JSON line per rate, then a summary line with the highest rate whose
p99 TTFT stayed under the SLO.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmservice.runtime.bench.measure import BenchmarkError
from llmservice.runtime.bench.progress import ProgressBar
from llmservice.runtime.bench.result import base_fields, emit, rate
from llmservice.runtime.bench.serve_client import (
    CompletionTarget,
    RequestResult,
    poisson_arrivals,
    run_arrivals,
    stream_completion,
)
from llmservice.runtime.bench.stats import Summary, highest_rate_within_slo
from llmservice.runtime.bench.workloads import Workload, make_prompts

# Distinct error messages kept on a rate's line (the rest are only counted).
_MAX_ERRORS_SHOWN = 3
_READY_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class ServeRun:
    """Everything `bench serve` needs besides the workload."""

    base_url: str
    """The server's root URL."""
    vocab_size: int
    """Prompt token ids are drawn from [0, vocab_size)."""
    seed: int
    """Seed of the prompts and of the arrival times."""
    device: str
    """The local device the result lines name (the server normally runs on this machine)."""
    engine_label: str = "llmservice"
    """The `engine` field of the result lines (the server under test)."""
    served_model: str | None = None
    """The request's `model`; None asks the server (`GET /v1/models`, first id)."""
    api_key: str | None = None
    """Bearer token for a server started with `--api-key`."""
    request_timeout_s: float = 60.0
    """A request not finished after this many seconds counts as failed."""
    wait_ready_s: float = 0.0
    """Keep polling `GET /v1/models` this long for a server that is still starting."""
    stop_on_slo_miss: bool = False
    """Skip the higher rates once a rate misses the TTFT SLO (they can only do worse)."""


def run_serve(run: ServeRun, workload: Workload) -> int:
    """Run W5 against the server; prints one line per rate and a summary line."""
    if not workload.request_rates or workload.ttft_slo_s is None:
        raise ValueError(f"{workload.name} defines no request rates or TTFT SLO")
    return asyncio.run(_run(run, workload))


async def _run(run: ServeRun, workload: Workload) -> int:
    # limit=0: no client-side cap on open connections, or the client would queue requests
    # that the server should be queueing (and TTFT would hide it).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        model = run.served_model or await _served_model(session, run)
        target = CompletionTarget(
            run.base_url, model, workload.output_len, run.request_timeout_s, run.api_key
        )
        warmup = make_prompts(
            workload.with_sizes(num_requests=1), run.vocab_size, run.seed, "warmup"
        )
        check = await stream_completion(session, target, warmup[0])
        if not check.ok:
            raise BenchmarkError(f"the warm-up request to {target.url} failed: {check.error}")
        slo_ms = float(workload.ttft_slo_s or 0.0) * 1000.0
        p99_by_rate: list[tuple[float, float | None]] = []
        for request_rate in workload.request_rates:
            stream = f"rate-{request_rate:g}"
            prompts = make_prompts(workload, run.vocab_size, run.seed, stream)
            arrivals = poisson_arrivals(workload.num_requests, request_rate, run.seed, stream)
            with ProgressBar(f"W5 at {request_rate:g} req/s", workload.num_requests) as bar:
                results, duration_s = await run_arrivals(
                    session, target, prompts, arrivals, bar.update
                )
            record = _rate_record(run, workload, model, request_rate, results, duration_s, slo_ms)
            _warn_if_batched_stream(record)
            emit(record)
            served = record["failures"] == 0 and record["meets_ttft_slo"]
            p99_by_rate.append((request_rate, record["ttft_p99_ms"] if served else None))
            if run.stop_on_slo_miss and not served:
                break
        summary = base_fields(workload.name, run.engine_label, model, run.device)
        summary.update(
            measurement="summary",
            rates_run=[r for r, _ in p99_by_rate],
            ttft_slo_ms=slo_ms,
            max_rate_within_ttft_slo=highest_rate_within_slo(p99_by_rate, slo_ms),
        )
        emit(summary)
    return 0


async def _served_model(session: aiohttp.ClientSession, run: ServeRun) -> str:
    """The first model id of `GET /v1/models`, polling while the server starts."""
    url = f"{run.base_url.rstrip('/')}/v1/models"
    headers = {"Authorization": f"Bearer {run.api_key}"} if run.api_key else {}
    deadline = time.monotonic() + run.wait_ready_s
    while True:
        try:
            async with session.get(url, headers=headers) as response:
                if response.status == 200:
                    models = (await response.json())["data"]
                    if not models:
                        raise BenchmarkError(f"{url} lists no model")
                    return str(models[0]["id"])
                problem = f"HTTP {response.status}"
        except aiohttp.ClientError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise BenchmarkError(
                f"the server at {run.base_url} is not ready ({url}: {problem}) after "
                f"{run.wait_ready_s:g} s"
            )
        await asyncio.sleep(_READY_POLL_S)


def _warn_if_batched_stream(record: dict[str, Any]) -> None:
    chunks = record["chunks_per_request"]
    if chunks is not None and chunks < record["output_len"] / 2:
        print(
            f"warning: the server streamed {chunks:g} chunks per request for "
            f"{record['output_len']} tokens: TTFT and ITL are per chunk, not per token",
            file=sys.stderr,
        )


def _rate_record(
    run: ServeRun,
    workload: Workload,
    model: str,
    request_rate: float,
    results: list[RequestResult],
    duration_s: float,
    slo_ms: float,
) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    errors = sorted({r.error for r in results if r.error is not None})
    output_tokens = sum(r.output_tokens for r in ok)
    ttft = Summary.of_seconds([r.ttft_s for r in ok if r.ttft_s is not None])
    itl = Summary.of_seconds([gap for r in ok for gap in r.itl_s])
    e2e = Summary.of_seconds([r.latency_s for r in ok])
    record = base_fields(workload.name, run.engine_label, model, run.device)
    record.update(
        standard_workload=workload.is_standard(),
        request_rate=request_rate,
        requests=len(results),
        completed=len(ok),
        failures=len(results) - len(ok),
        errors=errors[:_MAX_ERRORS_SHOWN],
        input_len=workload.prompt_len,
        output_len=workload.output_len,
        seed=run.seed,
        duration_s=round(duration_s, 3),
        request_throughput=rate(len(ok), duration_s),
        output_tok_s=rate(output_tokens, duration_s),
        total_tok_s=rate(output_tokens + len(ok) * workload.prompt_len, duration_s),
        chunks_per_request=round(sum(r.chunks for r in ok) / len(ok), 2) if ok else None,
    )
    for name, summary in (("ttft", ttft), ("itl", itl), ("e2e", e2e)):
        if summary is None:
            record.update({f"{name}_mean_ms": None, f"{name}_p50_ms": None, f"{name}_p99_ms": None})
        else:
            record.update(summary.as_fields(name))
    record["ttft_slo_ms"] = slo_ms
    record["meets_ttft_slo"] = ttft is not None and ttft.p99_ms < slo_ms
    return record
