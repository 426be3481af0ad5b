"""`ServerConfig`: the HTTP side of `llmservice serve` (the engine's options are `EngineArgs`)."""

from __future__ import annotations

from dataclasses import dataclass

from llmservice.runtime.server.metrics import DEFAULT_LATENCY_BUCKETS


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the API server listens, admits and limits requests."""

    model: str
    """The model as given on the command line (a folder or builtin:<name>)."""
    served_model_names: tuple[str, ...]
    """Names clients may put in `model`; the first is the one /v1/models lists first."""
    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on."""
    api_key: str | None = None
    """When set, every route except /health, /ready, /metrics and /version needs it."""
    chat_template: str | None = None
    """Jinja text of --chat-template, rendered instead of the model's own chat template."""
    reasoning_parser: str | None = None
    """"deepseek_r1" or "qwen3": split chat answers into reasoning_content and content."""
    shutdown_timeout_s: float = 30.0
    """After SIGTERM, how long in-flight requests may run before they are aborted."""
    max_log_len: int | None = None
    """Characters of prompt (or prompt token ids) in the request log; None logs them whole."""
    log_requests: bool = True
    """Log one line per accepted request."""
    log_probe_requests: bool = False
    """Access-log /health, /ready and /metrics too (off: probes would flood the log)."""
    max_waiting_requests: int | None = None
    """Waiting samples beyond which new requests get 503; None = 4 x max_num_seqs."""
    max_n: int = 128
    """Largest `n` a request may ask for."""
    max_sequences_per_request: int = 32
    """n * max_tokens may not exceed this many full-length (max_model_len) sequences."""
    max_body_bytes: int = 32 * 1024 * 1024
    """Largest request body; a larger one gets 413."""
    max_header_bytes: int = 16 * 1024
    """Largest request line or header field; a larger one gets 413."""
    retry_after_s: int = 1
    """Retry-After of 503 answers."""
    heartbeat_interval_s: float = 1.0
    """How often an idle EngineCore reports that it is alive."""
    heartbeat_timeout_s: float = 60.0
    """An engine silent this long with work to do is hung: /health turns 503 and we exit."""
    latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    """Histogram buckets (seconds) of the latency metrics."""
