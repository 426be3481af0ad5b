"""`llmservice serve [MODEL]`: the flags of DESIGN.md section 2, and the entry point."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from llmservice.runtime.server.metrics import DEFAULT_LATENCY_BUCKETS
from llmservice.runtime.server.reasoning import REASONING_PARSERS

DEFAULT_MODEL = "builtin:tiny-reasoner"


API_KEY_ENV = "LLMSERVICE_API_KEY"
"""The environment variable that --api-key defaults to."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `serve` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve a model over an OpenAI-compatible HTTP API.",
    )
    parser.add_argument(
        "model",
        nargs="?",
        default=DEFAULT_MODEL,
        help="a Hugging Face model folder or builtin:<name> (default: %(default)s)",
    )
    http = parser.add_argument_group("HTTP server")
    http.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default: %(default)s)"
    )
    http.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    http.add_argument(
        "--served-model-name",
        nargs="+",
        default=None,
        help="names clients may use in `model` (default: MODEL)",
    )
    http.add_argument(
        "--api-key",
        # From the environment too, so a key need not appear in the process's arguments (the
        # operator fills the variable from a Secret).
        default=os.environ.get(API_KEY_ENV) or None,
        help="require 'Authorization: Bearer KEY' (all routes but /health, /ready, /metrics, "
        f"/version); default: ${API_KEY_ENV}",
    )
    http.add_argument(
        "--chat-template",
        type=_chat_template,
        default=None,
        help="a Jinja chat template file, or the template text itself, used instead of the "
        "model's own",
    )
    http.add_argument(
        "--reasoning-parser",
        choices=sorted(REASONING_PARSERS),
        default=None,
        help="split chat answers into reasoning_content and content",
    )
    http.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds requests in flight may run after SIGTERM (default: %(default)s)",
    )
    http.add_argument(
        "--max-log-len",
        type=int,
        default=None,
        help="characters or token ids of each prompt in the request log (default: all)",
    )
    http.add_argument(
        "--disable-log-requests", action="store_true", help="do not log a line per request"
    )
    http.add_argument(
        "--log-probe-requests",
        action="store_true",
        help="access-log /health, /ready and /metrics too",
    )
    http.add_argument(
        "--max-waiting-requests",
        type=int,
        default=None,
        help="waiting samples beyond which requests get 503 (default: 4 x max-num-seqs)",
    )
    http.add_argument(
        "--engine-heartbeat-timeout",
        type=float,
        default=60.0,
        help="seconds of engine silence that count as a hang (default: %(default)s)",
    )
    http.add_argument(
        "--latency-buckets",
        type=_buckets,
        default=DEFAULT_LATENCY_BUCKETS,
        help="comma-separated histogram buckets in seconds",
    )
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--max-model-len", type=int, default=None, help="tokens per sequence (default: the model's)"
    )
    engine.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.9,
        help="fraction of GPU memory to use (default: %(default)s)",
    )
    engine.add_argument(
        "--max-num-seqs",
        type=int,
        default=None,
        help="sequences per step (default: chosen for the device)",
    )
    engine.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="tokens per step (default: chosen for the device)",
    )
    engine.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse the KV cache of shared prefixes (default: on)",
    )
    parser.add_argument(
        "--admission-headroom",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="admit a request only while the KV cache keeps room for the running requests' "
        "output, so batches do not outgrow it and preempt (default: on)",
    )
    engine.add_argument(
        "--enforce-eager",
        action="store_true",
        help="run the model eagerly, without CUDA graphs (less memory and a faster start-up, "
        "slower decoding)",
    )
    engine.add_argument(
        "--scheduling-policy",
        choices=("fcfs", "priority"),
        default="fcfs",
        help="request order (default: %(default)s)",
    )
    engine.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=1,
        help="GPUs per replica (default: %(default)s)",
    )
    engine.add_argument(
        "--load-format",
        choices=("auto", "dummy"),
        default="auto",
        help="'dummy' makes random weights (default: %(default)s)",
    )
    engine.add_argument(
        "--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default: %(default)s)"
    )
    engine.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    engine.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of unseeded sampling and dummy weights (default: %(default)s)",
    )
    engine.add_argument(
        "--num-kv-blocks",
        type=int,
        default=None,
        help="exactly this many KV blocks (tests, capacity experiments)",
    )
    parser.set_defaults(handler=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM; the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import uvloop

    from llmservice.runtime.server.config import ServerConfig
    from llmservice.runtime.server.lifecycle import Lifecycle

    config = ServerConfig(
        model=args.model,
        served_model_names=tuple(args.served_model_name or [args.model]),
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        chat_template=args.chat_template,
        reasoning_parser=args.reasoning_parser,
        shutdown_timeout_s=args.shutdown_timeout,
        max_log_len=args.max_log_len,
        log_requests=not args.disable_log_requests,
        log_probe_requests=args.log_probe_requests,
        max_waiting_requests=args.max_waiting_requests,
        heartbeat_timeout_s=args.engine_heartbeat_timeout,
        latency_buckets=args.latency_buckets,
    )
    code = uvloop.run(Lifecycle(config, _engine_kwargs(args)).run())
    # Everything is closed and the engine core has exited. Tearing down an interpreter that
    # has loaded torch takes seconds (C-level finalizers), which a rolling update would wait
    # for: flush and leave now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`EngineArgs` fields (built in the EngineCore process: the engine imports torch)."""
    return {
        "model": args.model,
        "load_format": args.load_format,
        "dtype": args.dtype,
        "device": args.device,
        "max_model_len": args.max_model_len,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "enable_prefix_caching": args.enable_prefix_caching,
        "enforce_eager": args.enforce_eager,
        "admission_headroom": args.admission_headroom,
        "tensor_parallel_size": args.tensor_parallel_size,
        "scheduling_policy": args.scheduling_policy,
        "seed": args.seed,
        "num_kv_blocks": args.num_kv_blocks,
    }


def _buckets(text: str) -> tuple[float, ...]:
    try:
        values = tuple(sorted(float(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of seconds: {text!r}"
        ) from None
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError("buckets must be positive seconds")
    return values


def _chat_template(value: str) -> str:
    """--chat-template as vLLM reads it: a file's text, or else the template text itself.

    A value that is neither an existing file nor Jinja (no `{{` or `{%`) is most likely a
    mistyped path: refused here, at start-up, rather than on the first chat request.
    """
    is_file = _is_file(value)
    if is_file:
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise argparse.ArgumentTypeError(f"cannot read {value!r}: {error}") from None
    elif "{{" in value or "{%" in value:
        text = value
    else:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a file and does not look like a Jinja template (no '{{{{' or '{{%')"
        )
    _check_jinja_syntax(text, f" in {value}" if is_file else "")
    return text


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # template text can be too long (or odd) for a path
        return False


def _check_jinja_syntax(text: str, where: str) -> None:
    """A syntax error in the template fails start-up, not every chat request."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols

    class _Generation(Extension):
        # transformers renders chat templates with `{% generation %}...{% endgeneration %}`
        # (it marks the assistant's tokens) and loop controls; accept what it accepts.
        tags = {"generation"}  # noqa: RUF012 (jinja2 declares it a plain set)

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    try:
        jinja2.Environment(extensions=[_Generation, loopcontrols]).parse(text)
    except jinja2.TemplateSyntaxError as error:
        raise argparse.ArgumentTypeError(
            f"the template has a syntax error{where} (line {error.lineno}): {error.message}"
        ) from None
