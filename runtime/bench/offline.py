"""The offline benchmarks: W1, W3, W4 (throughput) and W2 (latency), ours and the peer's.

One routine measures any `BenchEngine`: build it (start-up), warm it up on prompts of its own,
time the measured batches, release it. The engines run one after the other, never side by
side, because each takes most of the GPU's memory. Our line is printed after the peer's run so
that it can carry the ratio; the peer's failure never loses our figures (it is reported on our
line and in the exit status).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmservice.runtime.bench.engine import EngineOptions, LLMServiceEngine
from llmservice.runtime.bench.measure import BenchEngine, GenerationRun
from llmservice.runtime.bench.peer import PeerOptions, TransformersPeer
from llmservice.runtime.bench.result import base_fields, emit, rate
from llmservice.runtime.bench.workloads import Workload, make_prompts

# Warm-up requests are short: they exist to compile kernels and touch every code path once.
_WARMUP_OUTPUT_LEN = 16


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """Whether and how the transformers peer runs after our engine."""

    options: PeerOptions
    """How the peer is set up."""
    num_requests: int | None = None
    """Run the peer on the first N requests only (it is slow); None runs all of them."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one engine did on one workload setting."""

    engine: str
    """The engine's name."""
    startup_s: float
    """Seconds the engine took to build."""
    warmup_s: float | None
    """Seconds of the warm-up batch (None without one)."""
    runs: tuple[GenerationRun, ...]
    """The measured batches, in order."""
    details: dict[str, Any]
    """The engine's own settings, for its result line."""


@dataclass(frozen=True, slots=True)
class OfflineRun:
    """Everything one offline command needs besides the workload."""

    options: EngineOptions
    """How our `LLM` is built."""
    model_path: str
    """The model's folder (the peer builds its model from its config.json)."""
    model_label: str
    """The `model` field of the result lines."""
    device: str
    """The resolved device ("cuda", "cpu")."""
    vocab_size: int
    """Token ids of the prompts are drawn from [0, vocab_size)."""
    warmup_requests: int
    """Warm-up requests before the measured batch (0: none)."""
    prefix_caching_asked: bool | None = None
    """Prefix caching as the user set it; None (not set): W4 runs both ways, others with it on."""
    peer: PeerSpec | None = None
    """The peer run, if any."""


def run_throughput(run: OfflineRun, workload: Workload) -> int:
    """W1/W3/W4: one batch of the workload's requests, timed; W4 with and without prefix
    caching. Prints one line per engine and setting; returns the exit status."""
    _check_peer_subset(run, workload)
    prompts = make_prompts(workload, run.vocab_size, run.options.seed)
    warmup = _warmup_prompts(run, workload, run.warmup_requests)
    # W4 exists to compare the two (unless one was asked for: each run then fits in a shorter
    # command); the other workloads run with the setting asked for, on by default.
    if run.prefix_caching_asked is not None:
        settings: tuple[bool, ...] = (run.prefix_caching_asked,)
    elif workload.shared_prefix_len:
        settings = (True, False)
    else:
        settings = (True,)
    status = 0
    for caching in settings:
        options = run.options.with_prefix_caching(caching)
        ours = _measure(
            functools.partial(LLMServiceEngine, options), [prompts], workload.output_len, warmup
        )
        peer, peer_error = _measure_peer(run, workload, [prompts], warmup, caching)
        status = status or int(peer_error is not None)
        fields: dict[str, Any] = {"prefix_caching": caching}
        ours_fields = dict(fields)
        if peer is not None:
            # Both ran requests of the same shape, so total and output tok/s give one ratio.
            ours_fields.update(
                _speedup(
                    _total_tok_s(ours), _total_tok_s(peer), "total_tok_s", higher_is_better=True
                )
            )
        emit(_record(run, workload, ours, ours_fields, peer_error))
        if peer is not None:
            emit(_record(run, workload, peer, fields))
    return status


def run_latency(run: OfflineRun, workload: Workload, num_iters: int) -> int:
    """W2: each request alone, `num_iters` times after one warm-up request of the same shape;
    ms per output token of the mean latency. Prints one line per engine."""
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    prompts = make_prompts(
        workload.with_sizes(num_requests=num_iters), run.vocab_size, run.options.seed
    )
    batches = [[prompt] for prompt in prompts]
    # The warm-up has the measured shape (one request, full length): nothing is compiled or
    # allocated for the first time while the clock runs. Its prompt differs from the measured
    # ones, so the prefix cache cannot serve a measured prefill.
    warmup = make_prompts(
        workload.with_sizes(num_requests=1), run.vocab_size, run.options.seed, "warmup"
    )
    ours = _measure(
        lambda: LLMServiceEngine(run.options),
        batches,
        workload.output_len,
        warmup,
        workload.output_len,
    )
    peer, peer_error = _measure_peer(run, workload, batches, warmup, True, workload.output_len)
    ours_fields = {"prefix_caching": run.options.enable_prefix_caching}
    ours_fields.update(_latency_fields(ours, workload))
    if peer is not None:
        peer_fields = _latency_fields(peer, workload)
        metric = "ms_per_output_token"
        ours_fields.update(
            _speedup(ours_fields[metric], peer_fields[metric], metric, higher_is_better=False)
        )
    emit(_record(run, workload, ours, ours_fields, peer_error))
    if peer is not None:
        emit(_record(run, workload, peer, peer_fields))
    return int(peer_error is not None)


def _measure(
    make_engine: Callable[[], BenchEngine],
    batches: list[list[list[int]]],
    output_len: int,
    warmup: list[list[int]],
    warmup_len: int = _WARMUP_OUTPUT_LEN,
) -> Measurement:
    engine = make_engine()
    try:
        _note(f"{engine.name}: started in {engine.startup_s:.1f} s")
        warmup_s = (
            engine.generate(warmup, min(warmup_len, output_len)).elapsed_s if warmup else None
        )
        runs = []
        for batch in batches:
            _note(f"{engine.name}: {len(batch)} requests x {output_len} output tokens")
            runs.append(engine.generate(batch, output_len))
        return Measurement(engine.name, engine.startup_s, warmup_s, tuple(runs), engine.details())
    finally:
        engine.close()


def _measure_peer(
    run: OfflineRun,
    workload: Workload,
    batches: list[list[list[int]]],
    warmup: list[list[int]],
    prefix_sharing: bool,
    warmup_len: int = _WARMUP_OUTPUT_LEN,
) -> tuple[Measurement | None, str | None]:
    """The peer's measurement on the first `num_requests` prompts of each batch, or the error
    that stopped it (printed to stderr in full)."""
    if run.peer is None:
        return None, None
    spec = run.peer
    count = spec.num_requests
    options = dataclasses.replace(spec.options, prefix_sharing=prefix_sharing)
    opts = run.options
    try:
        measurement = _measure(
            lambda: TransformersPeer(run.model_path, opts.dtype, run.device, opts.seed, options),
            [batch[:count] for batch in batches],
            workload.output_len,
            warmup,
            warmup_len,
        )
    except Exception as exc:  # the peer is a third party: its failure must not lose our line
        traceback.print_exc(file=sys.stderr)
        return None, f"{type(exc).__name__}: {exc}"
    return measurement, None


def _record(
    run: OfflineRun,
    workload: Workload,
    measurement: Measurement,
    extra: dict[str, Any],
    peer_error: str | None = None,
) -> dict[str, Any]:
    """One result line: who, what workload, its settings (+ `extra`), how long, how fast."""
    record = base_fields(workload.name, measurement.engine, run.model_label, run.device)
    total = _total(measurement.runs)
    record.update(
        standard_workload=workload.is_standard(),
        requests=total.num_requests,
        input_len=workload.prompt_len,
        output_len=workload.output_len,
        shared_prefix_len=workload.shared_prefix_len,
        seed=run.options.seed,
    )
    record.update(measurement.details)
    record.update(extra)
    record.update(
        startup_s=round(measurement.startup_s, 2),
        warmup_s=None if measurement.warmup_s is None else round(measurement.warmup_s, 2),
        elapsed_s=round(total.elapsed_s, 3),
        prompt_tokens=total.prompt_tokens,
        output_tokens=total.output_tokens,
        output_tok_s=rate(total.output_tokens, total.elapsed_s),
        total_tok_s=rate(total.prompt_tokens + total.output_tokens, total.elapsed_s),
    )
    if total.num_requests < workload.num_requests * len(measurement.runs):
        # The peer ran a subset: its rates are per second of its own, smaller run, whose
        # batches are smaller than the full workload's would be; a continuous-batching engine
        # is usually faster per token in bigger batches, so the ratio against our full run
        # overstates our lead. Same for the projection, which scales its time linearly.
        record["subset_of_requests"] = workload.num_requests
        record["projected_elapsed_s"] = round(
            total.elapsed_s * workload.num_requests * len(measurement.runs) / total.num_requests, 3
        )
        record["note"] = (
            f"ran the first {total.num_requests} of {workload.num_requests} requests; tok/s "
            "figures are over this subset (smaller batches: likely below its full-run rate)"
        )
    if peer_error is not None:
        record["peer_error"] = peer_error
    return record


def _speedup(ours: float, peer: float, metric: str, higher_is_better: bool) -> dict[str, Any]:
    """How many times better we did than the peer on `metric` (> 1: we are faster)."""
    ratio = ours / peer if higher_is_better else peer / ours
    return {"speedup_vs_transformers": round(ratio, 3), "speedup_metric": metric}


def _total_tok_s(measurement: Measurement) -> float:
    total = _total(measurement.runs)
    return (total.prompt_tokens + total.output_tokens) / total.elapsed_s


def _latency_fields(measurement: Measurement, workload: Workload) -> dict[str, Any]:
    latencies = [r.elapsed_s for r in measurement.runs]
    mean_s = sum(latencies) / len(latencies)
    return {
        "iterations": len(latencies),
        "latencies_s": [round(x, 4) for x in latencies],
        "latency_mean_s": round(mean_s, 4),
        "ms_per_output_token": round(mean_s * 1000.0 / workload.output_len, 3),
    }


def _total(runs: tuple[GenerationRun, ...]) -> GenerationRun:
    return GenerationRun(
        elapsed_s=sum(r.elapsed_s for r in runs),
        num_requests=sum(r.num_requests for r in runs),
        prompt_tokens=sum(r.prompt_tokens for r in runs),
        output_tokens=sum(r.output_tokens for r in runs),
    )


def _check_peer_subset(run: OfflineRun, workload: Workload) -> None:
    # Checked before anything runs: a bad flag must not cost a full run of our engine first.
    count = None if run.peer is None else run.peer.num_requests
    if count is not None and not 1 <= count <= workload.num_requests:
        raise ValueError(f"peer_num_requests must be in [1, {workload.num_requests}], got {count}")


def _warmup_prompts(run: OfflineRun, workload: Workload, count: int) -> list[list[int]]:
    if count < 0:
        raise ValueError(f"warmup_requests must be >= 0, got {count}")
    if count == 0:
        return []
    shape = workload.with_sizes(num_requests=count)
    # Drawn from their own stream (W4: with their own shared prefix), so the warm-up never
    # fills the prefix cache with blocks the measured run could hit.
    return make_prompts(shape, run.vocab_size, run.options.seed, "warmup")


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
