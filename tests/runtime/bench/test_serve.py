"""`llmservice bench serve` (W5) end to end against a stub OpenAI-compatible server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmservice.runtime.bench.serve_client import poisson_arrivals

SMALL = ["--num-requests", "12", "--input-len", "16", "--output-len", "5", "--seed", "7"]


def _serve(run_bench: Callable[..., Any], url: str, model: Path, *extra: str) -> Any:
    return run_bench(
        "serve", "--url", url, "--model", str(model), "--device", "cpu", *SMALL, *extra
    )


def test_each_rate_gets_a_line_with_latencies_then_a_summary(
    run_bench: Callable[..., Any], stub_server: Callable[..., Any], tiny_model: Path
) -> None:
    with stub_server(token_delay_s=0.002) as (url, stub):
        result = _serve(run_bench, url, tiny_model, "--rates", "40,80")
    assert result.returncode == 0, result.stderr
    first, second, summary = result.lines
    for line, rate in ((first, 40.0), (second, 80.0)):
        assert line["workload"] == "W5" and line["engine"] == "llmservice"
        assert line["model"] == "stub-model" and line["device"] == "cpu"
        assert (line["request_rate"], line["requests"], line["completed"]) == (rate, 12, 12)
        assert (line["failures"], line["errors"]) == (0, [])
        assert (line["input_len"], line["output_len"]) == (16, 5)
        assert line["standard_workload"] is False
        # 5 tokens, 2 ms apart: TTFT and ITL see the stub's pacing.
        assert 1.0 <= line["ttft_p50_ms"] <= line["ttft_p99_ms"]
        assert 1.5 <= line["itl_p50_ms"] <= line["itl_p99_ms"]
        assert line["e2e_p50_ms"] >= line["ttft_p50_ms"]
        assert line["output_tok_s"] == pytest.approx(12 * 5 / line["duration_s"], rel=0.01)
        assert line["meets_ttft_slo"] is True
        assert line["chunks_per_request"] == 5
    assert summary["measurement"] == "summary"
    assert summary["rates_run"] == [40.0, 80.0]
    assert summary["max_rate_within_ttft_slo"] == 80.0
    assert "warning" not in result.stderr
    # One warm-up request, then 12 per rate: token-id prompts of the asked length and vocab.
    assert len(stub.bodies) == 1 + 2 * 12
    for body in stub.bodies:
        assert body["model"] == "stub-model" and body["stream"] is True
        assert body["max_tokens"] == 5 and body["ignore_eos"] is True
        assert body["stream_options"] == {"include_usage": True}
        assert len(body["prompt"]) == 16 and all(0 <= t < 256 for t in body["prompt"])
    # Each rate draws its own prompts, so a prefix cache cannot carry over between rates.
    rate_40 = {tuple(b["prompt"]) for b in stub.bodies[1:13]}
    rate_80 = {tuple(b["prompt"]) for b in stub.bodies[13:]}
    assert len(rate_40) == 12 and not rate_40 & rate_80


def test_failed_requests_are_counted_named_and_miss_the_slo(
    run_bench: Callable[..., Any], stub_server: Callable[..., Any], tiny_model: Path
) -> None:
    # The warm-up is request 1; requests 2, 4, ... fail with HTTP 500.
    with stub_server(fail_every=2) as (url, _):
        result = _serve(run_bench, url, tiny_model, "--rates", "50")
    assert result.returncode == 0, result.stderr
    line, summary = result.lines
    assert (line["completed"], line["failures"]) == (6, 6)
    assert line["errors"] == ['HTTP 500: {"error": {"message": "injected failure"}}']
    assert summary["max_rate_within_ttft_slo"] is None


def test_a_short_stream_is_a_failure(
    run_bench: Callable[..., Any], stub_server: Callable[..., Any], tiny_model: Path
) -> None:
    with stub_server(short_by=1) as (url, _):
        result = _serve(run_bench, url, tiny_model, "--rates", "50")
    assert result.returncode == 1
    assert "warm-up request" in result.stderr and "received 4 tokens, expected 5" in result.stderr
    assert result.lines == []


def test_stop_on_slo_miss_skips_the_higher_rates(
    run_bench: Callable[..., Any], stub_server: Callable[..., Any], tiny_model: Path
) -> None:
    with stub_server(fail_every=2) as (url, _):
        result = _serve(run_bench, url, tiny_model, "--rates", "50,100", "--stop-on-slo-miss")
    assert result.returncode == 0, result.stderr
    line, summary = result.lines
    assert line["request_rate"] == 50.0 and line["failures"] == 6
    assert summary["rates_run"] == [50.0] and summary["max_rate_within_ttft_slo"] is None


def test_requests_past_their_timeout_fail_and_the_rate_still_ends(
    run_bench: Callable[..., Any], stub_server: Callable[..., Any], tiny_model: Path
) -> None:
    # The warm-up answers at once; every measured request stalls for 2 s.
    with stub_server(stall_from=2, stall_s=2.0) as (url, _):
        result = _serve(run_bench, url, tiny_model, "--rates", "100", "--request-timeout-s", "0.3")
    assert result.returncode == 0, result.stderr
    line, _ = result.lines
    assert (line["completed"], line["failures"]) == (0, 12)
    assert line["errors"] == ["no complete response within 0.3 s"]
    assert line["ttft_p99_ms"] is None and line["meets_ttft_slo"] is False
    assert line["duration_s"] < 1.5


def test_a_server_that_is_not_there_is_reported_not_hung(
    run_bench: Callable[..., Any], tiny_model: Path
) -> None:
    result = _serve(run_bench, "http://127.0.0.1:9", tiny_model, "--wait-ready-s", "1")
    assert result.returncode == 1
    assert "is not ready" in result.stderr and "after 1 s" in result.stderr


def test_a_stream_batched_into_fewer_chunks_is_flagged(
    run_bench: Callable[..., Any], stub_server: Callable[..., Any], tiny_model: Path
) -> None:
    with stub_server(one_chunk=True) as (url, _):
        result = _serve(run_bench, url, tiny_model, "--rates", "50")
    assert result.returncode == 0, result.stderr
    line, _ = result.lines
    assert (line["completed"], line["chunks_per_request"], line["itl_p50_ms"]) == (12, 1, None)
    assert "streamed 1 chunks per request for 5 tokens" in result.stderr


def test_poisson_arrivals_are_seeded_and_have_the_asked_rate() -> None:
    times = poisson_arrivals(4000, rate=20.0, seed=1, stream="a")
    assert times[0] == 0.0 and times == sorted(times)
    assert times[-1] / len(times) == pytest.approx(1 / 20.0, rel=0.05)
    assert poisson_arrivals(4000, 20.0, 1, "a") == times
    assert poisson_arrivals(4000, 20.0, 1, "b") != times


@pytest.mark.slow
def test_a_tiny_run_against_the_real_server(
    run_bench: Callable[..., Any], tiny_model: Path, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = shutil.which("llmservice") or f"{sys.prefix}/bin/llmservice"
    server_args = ["--load-format", "dummy", "--device", "cpu", "--dtype", "float32"]
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(
            [
                exe,
                "serve",
                str(tiny_model),
                *server_args,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            result = _serve(
                run_bench,
                f"http://127.0.0.1:{port}",
                tiny_model,
                "--rates",
                "20",
                "--wait-ready-s",
                "120",
            )
        finally:
            server.terminate()
            server.wait(timeout=60)
    assert result.returncode == 0, result.stderr + (tmp_path / "server.log").read_text()[-3000:]
    line, summary = result.lines
    assert (line["model"], line["requests"], line["completed"], line["failures"]) == (
        str(tiny_model),
        12,
        12,
        0,
    )
    assert line["output_tok_s"] == pytest.approx(12 * 5 / line["duration_s"], rel=0.01)
    assert line["ttft_p50_ms"] is not None and line["chunks_per_request"] >= 1
    assert summary["rates_run"] == [20.0]
