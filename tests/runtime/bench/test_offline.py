"""`llmservice bench throughput|latency` end to end on the CPU, through the console script.

A config-only tiny Llama with random weights (`--load-format dummy`, the default) stands in for
Llama-3.1-8B; the sizes are shrunk with the override flags. The peer (transformers' continuous
batching) runs when transformers can size its KV cache on this machine (see the skip reason).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

CPU = "--device cpu --dtype float32 --warmup-requests 1"
# transformers sizes its CPU KV cache from psutil's view of host memory; without psutil it
# sees 0 bytes and refuses to start (MemoryError in PagedAttentionMemoryHandler).
NEEDS_PSUTIL = pytest.mark.skipif(
    importlib.util.find_spec("psutil") is None,
    reason="transformers' generate_batch on the CPU needs psutil to size its KV cache",
)


def _check_rates(line: dict[str, Any]) -> None:
    # elapsed_s is printed rounded to the millisecond while the rates come from the exact time,
    # and a tiny CPU run lasts only a few milliseconds: compare the times the rates imply.
    elapsed = line["elapsed_s"]
    assert elapsed > 0
    total = line["prompt_tokens"] + line["output_tokens"]
    for tokens, rate in (
        (line["output_tokens"], line["output_tok_s"]),
        (total, line["total_tok_s"]),
    ):
        assert tokens / rate == pytest.approx(elapsed, rel=0.02, abs=5e-4)


def test_throughput_reports_exact_token_counts(
    run_bench: Callable[..., Any], tiny_model: Path
) -> None:
    result = run_bench(
        f"throughput --workload W1 --num-requests 4 --input-len 16 --output-len 4 {CPU}",
        "--model",
        str(tiny_model),
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.lines
    assert (line["workload"], line["engine"], line["model"]) == ("W1", "llmservice", "tiny-llama")
    assert (line["device"], line["dtype"], line["load_format"]) == ("cpu", "float32", "dummy")
    assert (line["requests"], line["input_len"], line["output_len"]) == (4, 16, 4)
    assert (line["prompt_tokens"], line["output_tokens"]) == (64, 16)
    assert line["standard_workload"] is False and line["prefix_caching"] is True
    assert line["startup_s"] > 0 and line["warmup_s"] > 0
    assert "speedup_vs_transformers" not in line
    _check_rates(line)


def test_shared_prefix_workload_runs_with_and_without_prefix_caching(
    run_bench: Callable[..., Any], tiny_model: Path
) -> None:
    result = run_bench(
        f"throughput --workload W4 --num-requests 3 --input-len 8 --shared-prefix-len 32 "
        f"--output-len 3 {CPU}",
        "--model",
        str(tiny_model),
    )
    assert result.returncode == 0, result.stderr
    cached, uncached = result.lines
    assert (cached["prefix_caching"], uncached["prefix_caching"]) == (True, False)
    for line in (cached, uncached):
        assert (line["workload"], line["input_len"], line["shared_prefix_len"]) == ("W4", 40, 32)
        assert (line["prompt_tokens"], line["output_tokens"]) == (120, 9)
        _check_rates(line)


def test_shared_prefix_workload_runs_only_the_mode_asked_for(
    run_bench: Callable[..., Any], tiny_model: Path
) -> None:
    result = run_bench(
        f"throughput --workload W4 --num-requests 2 --input-len 4 --shared-prefix-len 16 "
        f"--output-len 2 {CPU} --no-enable-prefix-caching",
        "--model",
        str(tiny_model),
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.lines
    assert (line["workload"], line["prefix_caching"], line["output_tokens"]) == ("W4", False, 4)


def test_latency_reports_ms_per_token_and_start_up_separately(
    run_bench: Callable[..., Any], tiny_model: Path
) -> None:
    result = run_bench(
        "latency --input-len 8 --output-len 6 --num-iters 2 --device cpu --dtype float32",
        "--model",
        str(tiny_model),
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.lines
    assert (line["workload"], line["requests"], line["iterations"]) == ("W2", 2, 2)
    assert (line["prompt_tokens"], line["output_tokens"]) == (16, 12)
    assert len(line["latencies_s"]) == 2
    mean = sum(line["latencies_s"]) / 2
    assert line["latency_mean_s"] == pytest.approx(mean, abs=1e-3)
    assert line["ms_per_output_token"] == pytest.approx(mean * 1000 / 6, rel=0.01)
    # Start-up and the warm-up request are reported, never folded into the latency.
    assert line["startup_s"] > 0 and line["warmup_s"] > 0
    assert line["elapsed_s"] == pytest.approx(sum(line["latencies_s"]), abs=1e-3)


@NEEDS_PSUTIL
def test_peer_runs_the_same_workload_subset_and_the_ratio_is_on_our_line(
    run_bench: Callable[..., Any], tiny_model: Path
) -> None:
    result = run_bench(
        f"throughput --workload W1 --num-requests 4 --input-len 16 --output-len 4 {CPU} "
        "--peer transformers --peer-num-requests 2 --peer-block-size 16",
        "--model",
        str(tiny_model),
    )
    assert result.returncode == 0, result.stderr
    ours, peer = result.lines
    assert (ours["engine"], peer["engine"]) == ("llmservice", "transformers")
    assert (peer["requests"], peer["subset_of_requests"]) == (2, 4)
    assert (peer["prompt_tokens"], peer["output_tokens"]) == (32, 8)
    assert peer["attn_implementation"] == "paged|sdpa" and "transformers_version" in peer
    # both figures are rounded to milliseconds, so a tiny CPU run can differ by the rounding
    assert peer["projected_elapsed_s"] == pytest.approx(peer["elapsed_s"] * 2, rel=0.01, abs=1.5e-3)
    _check_rates(peer)
    ratio = ours["total_tok_s"] / peer["total_tok_s"]
    assert ours["speedup_vs_transformers"] == pytest.approx(ratio, rel=0.02)
    assert ours["speedup_metric"] == "total_tok_s"


@NEEDS_PSUTIL
def test_a_peer_past_its_timeout_is_reported_on_our_line_and_in_the_exit_status(
    run_bench: Callable[..., Any], tiny_model: Path
) -> None:
    result = run_bench(
        f"throughput --num-requests 2 --input-len 8 --output-len 2 {CPU} "
        "--peer transformers --peer-timeout-s 0",
        "--model",
        str(tiny_model),
    )
    assert result.returncode == 1
    (ours,) = result.lines
    assert ours["engine"] == "llmservice" and ours["output_tokens"] == 4
    assert ours["peer_error"].startswith("BenchmarkError: transformers did not finish within")
    assert "speedup_vs_transformers" not in ours


def test_a_peer_subset_larger_than_the_workload_is_refused_before_running(
    run_bench: Callable[..., Any], tiny_model: Path
) -> None:
    result = run_bench(
        f"throughput --num-requests 2 {CPU} --peer transformers --peer-num-requests 3",
        "--model",
        str(tiny_model),
    )
    assert result.returncode == 1
    assert "peer_num_requests must be in [1, 2], got 3" in result.stderr
    assert result.lines == []
