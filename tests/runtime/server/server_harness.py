"""Real `llmservice serve` processes on free ports, and the ways tests look at them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

API_KEY = "sk-test-key"
_STARTUP_TIMEOUT_S = 240.0


class ServerProcess:
    """A `llmservice serve` subprocess and the ways tests look at it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The API process."""
        return self.process.pid

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def core_pid(self) -> int:
        """The EngineCore process (from the start-up log line)."""
        match = re.search(r"engine core pid (\d+)", self.log())
        if match is None:
            raise AssertionError("the server did not log its engine core pid")
        return int(match.group(1))

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """A GET request: (status, headers, body)."""
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def post(
        self, path: str, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """A POST with the API key: (status, headers, decoded JSON body)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        all_headers.update(headers or {})
        request = urllib.request.Request(self.url + path, data=data, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())

    def metrics(self) -> dict[str, float]:
        """The /metrics samples by name (labels included: `name{label="v"}`)."""
        status, _, body = self.get("/metrics")
        assert status == 200
        samples = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def wait_ready(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited during start-up:\n{self.log()[-4000:]}")
            try:
                if self.get("/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"the server did not become ready:\n{self.log()[-4000:]}")

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: Path | str, log_dir: Path, *args: str) -> ServerProcess:
    """`llmservice serve MODEL --device cpu` on a free port, ready to serve."""
    port = free_port()
    exe = Path(sys.prefix) / "bin" / "llmservice"
    log_path = log_dir / f"server-{port}.log"
    command = [str(exe), "serve", str(model), "--device", "cpu", "--host", "127.0.0.1"]
    command += ["--port", str(port), *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = ServerProcess(process, port, log_path)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def wait_idle(server: ServerProcess, timeout_s: float = 20.0) -> dict[str, float]:
    """Poll /metrics until nothing runs or waits and the KV cache is empty; the metrics."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = server.metrics()
        idle = (
            metrics["llmservice:num_requests_running"] == 0
            and metrics["llmservice:num_requests_waiting"] == 0
            and metrics["llmservice:kv_cache_usage_perc"] == 0
        )
        if idle or time.monotonic() > deadline:
            return metrics
        time.sleep(0.1)


def wait_for(server: ServerProcess, name: str, at_least: float, timeout_s: float = 20.0) -> float:
    """Poll /metrics until `name` reaches `at_least` (or the time is up); its value."""
    deadline = time.monotonic() + timeout_s
    while (value := server.metrics()[name]) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
    return value
