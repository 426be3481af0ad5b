"""`llmservice bench throughput|latency|serve`: the fixed workloads of DESIGN.md section 5.

Each subcommand prints one JSON line per measurement on stdout (progress goes to stderr). The
defaults are the fixed workloads on the Llama-3.1-8B architecture with random weights; the size
flags shrink a workload for a quick run (the lines then say `"standard_workload": false`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmservice.runtime.bench.measure import BenchmarkError
from llmservice.runtime.bench.workloads import DEFAULT_MODEL, Workload, get_workload

if TYPE_CHECKING:
    from llmservice.runtime.bench.offline import OfflineRun

_THROUGHPUT_WORKLOADS = ("W1", "W3", "W4")


def register(subparsers: Any) -> None:
    """Add `bench` and its three subcommands to the `llmservice` parser."""
    bench = subparsers.add_parser(
        "bench",
        help="run the fixed benchmark workloads (JSON result lines on stdout)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = bench.add_subparsers(dest="bench_command", metavar="MODE", required=True)

    throughput = modes.add_parser(
        "throughput", help="W1, W3 or W4 through the LLM API (offline batch)"
    )
    throughput.add_argument("--workload", default="W1", choices=_THROUGHPUT_WORKLOADS)
    _add_size_flags(throughput, prefix=True)
    _add_engine_flags(throughput)
    _add_peer_flags(throughput)
    throughput.add_argument(
        "--warmup-requests",
        type=int,
        default=4,
        help="short requests run (untimed) before the measured batch (default 4; 0: none)",
    )
    throughput.set_defaults(handler=_throughput)

    latency = modes.add_parser("latency", help="W2: one request at a time, ms per output token")
    _add_size_flags(latency, prefix=False, requests=False)
    _add_engine_flags(latency)
    _add_peer_flags(latency, subset=False)
    latency.add_argument(
        "--num-iters",
        type=int,
        default=3,
        help="measured requests, one at a time, after one warm-up request (default 3)",
    )
    latency.set_defaults(handler=_latency)

    serve = modes.add_parser("serve", help="W5: a running OpenAI-compatible server under load")
    serve.add_argument("--url", default="http://127.0.0.1:8000", help="the server's root URL")
    _add_size_flags(serve, prefix=False)
    _add_common_flags(serve)
    serve.add_argument(
        "--rates",
        type=_rates,
        default=None,
        help="comma-separated arrival rates in requests/s (default: 4,8,16,24,32,40,48)",
    )
    serve.add_argument(
        "--served-model-name", help="the request's model (default: the server's first)"
    )
    serve.add_argument("--api-key", help="bearer token for a server started with --api-key")
    serve.add_argument(
        "--vocab-size", type=int, help="draw prompt ids below this (default: --model's)"
    )
    serve.add_argument("--engine-label", default="llmservice", help="the engine field of the lines")
    serve.add_argument(
        "--request-timeout-s",
        type=float,
        default=60.0,
        help="a request not finished in this many seconds fails (default 60)",
    )
    serve.add_argument(
        "--wait-ready-s",
        type=float,
        default=0.0,
        help="wait this long for a server that is still starting (default 0)",
    )
    serve.add_argument(
        "--stop-on-slo-miss",
        action="store_true",
        help="skip higher rates once a rate misses the p99 TTFT SLO",
    )
    serve.set_defaults(handler=_serve)


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="model folder or builtin:<name> (default: the Llama-3.1-8B config shipped here)",
    )
    parser.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of the prompts (default 0)"
    )
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu (default auto)")


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    _add_common_flags(parser)
    parser.add_argument("--load-format", default="dummy", choices=("dummy", "auto"))
    parser.add_argument("--dtype", default="bfloat16", help="default bfloat16")
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--max-num-batched-tokens", type=int)
    parser.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default on; W4 runs both ways unless one is given",
    )


def _add_size_flags(parser: argparse.ArgumentParser, prefix: bool, requests: bool = True) -> None:
    if requests:
        parser.add_argument(
            "--num-requests", type=int, help="override the workload's request count"
        )
    parser.add_argument(
        "--input-len", type=int, help="override the prompt length (W4: unique part)"
    )
    parser.add_argument("--output-len", type=int, help="override the output length")
    if prefix:
        parser.add_argument("--shared-prefix-len", type=int, help="override W4's shared prefix")


def _add_peer_flags(parser: argparse.ArgumentParser, subset: bool = True) -> None:
    peer = parser.add_argument_group("peer (HuggingFace transformers' continuous batching)")
    peer.add_argument("--peer", choices=("transformers",), help="also run the peer on the workload")
    if subset:
        peer.add_argument(
            "--peer-num-requests",
            type=int,
            help="run the peer on the first N requests only (it is slow)",
        )
    peer.add_argument(
        "--peer-attn-implementation",
        default="sdpa",
        help="transformers attention; run as its paged variant (default sdpa)",
    )
    peer.add_argument(
        "--peer-num-blocks", type=int, help="KV blocks (default: sized by transformers)"
    )
    peer.add_argument(
        "--peer-max-batch-tokens", type=int, help="tokens per step (default: transformers')"
    )
    peer.add_argument("--peer-block-size", type=int, default=256, help="tokens per KV block (256)")
    peer.add_argument(
        "--peer-timeout-s",
        type=float,
        help="stop the peer after this many seconds per batch; our line is printed regardless",
    )
    peer.add_argument(
        "--peer-compile-level",
        type=int,
        default=0,
        choices=(0, 1, 2, 3),
        help="transformers' torch.compile level (default 0: eager)",
    )


def _throughput(args: argparse.Namespace) -> int:
    from llmservice.runtime.bench.offline import run_throughput

    return _guarded(lambda: run_throughput(_offline_run(args), _workload(args, args.workload)))


def _latency(args: argparse.Namespace) -> int:
    from llmservice.runtime.bench.offline import run_latency

    # W2 is one request at a time; its warm-up is one request of the measured shape, made by
    # run_latency itself.
    args.num_requests, args.warmup_requests = None, 1
    return _guarded(lambda: run_latency(_offline_run(args), _workload(args, "W2"), args.num_iters))


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from llmservice.runtime.bench.serve import ServeRun, run_serve

    def run() -> int:
        workload = _workload(args, "W5")
        if args.rates is not None:
            workload = dataclasses.replace(workload, request_rates=args.rates)
        serve_run = ServeRun(
            base_url=args.url,
            vocab_size=args.vocab_size or _vocab_size(args.model),
            seed=args.seed,
            device=_device(args.device),
            engine_label=args.engine_label,
            served_model=args.served_model_name,
            api_key=args.api_key,
            request_timeout_s=args.request_timeout_s,
            wait_ready_s=args.wait_ready_s,
            stop_on_slo_miss=args.stop_on_slo_miss,
        )
        return run_serve(serve_run, workload)

    return _guarded(run)


def _workload(args: argparse.Namespace, name: str) -> Workload:
    """The workload `name` with the size flags of `args` applied."""
    return get_workload(name).with_sizes(
        num_requests=args.num_requests,
        input_len=args.input_len,
        output_len=args.output_len,
        shared_prefix_len=getattr(args, "shared_prefix_len", None),
    )


def _offline_run(args: argparse.Namespace) -> OfflineRun:
    from llmservice.runtime.bench.engine import EngineOptions
    from llmservice.runtime.bench.offline import OfflineRun, PeerSpec
    from llmservice.runtime.bench.peer import PeerOptions

    device = _device(args.device)
    peer = None
    if args.peer == "transformers":
        peer = PeerSpec(
            PeerOptions(
                attn_implementation=args.peer_attn_implementation,
                num_blocks=args.peer_num_blocks,
                max_batch_tokens=args.peer_max_batch_tokens,
                block_size=args.peer_block_size,
                compile_level=args.peer_compile_level,
                timeout_s=args.peer_timeout_s,
            ),
            num_requests=getattr(args, "peer_num_requests", None),
        )
    return OfflineRun(
        options=EngineOptions(
            model=args.model,
            load_format=args.load_format,
            dtype=args.dtype,
            device=device,
            seed=args.seed,
            max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            enable_prefix_caching=args.enable_prefix_caching is not False,
        ),
        model_path=_model_path(args.model),
        model_label=_model_label(args.model),
        device=device,
        vocab_size=_vocab_size(args.model),
        warmup_requests=args.warmup_requests,
        prefix_caching_asked=args.enable_prefix_caching,
        peer=peer,
    )


def _guarded(run: Callable[[], int]) -> int:
    """Run a benchmark; a bad setting or a failed run ends with its message, not a traceback."""
    try:
        return int(run())
    except (ValueError, FileNotFoundError, BenchmarkError) as exc:
        print(f"llmservice bench: error: {exc}", file=sys.stderr)
        return 1


def _device(device: str) -> str:
    if device == "cpu":
        return device  # without importing torch: `bench serve` itself never needs it
    from llmservice.runtime.engine_args import resolve_device

    return str(resolve_device(device))


def _model_path(model: str) -> str:
    """The folder of a model folder or `builtin:` name (FileNotFoundError if there is none)."""
    from llmservice.runtime.builtin import resolve_model_path

    path = resolve_model_path(model)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {model!r} does not exist")
    return str(path)


def _vocab_size(model: str) -> int:
    """The vocabulary size in the model folder's config.json (prompt ids are drawn below it)."""
    config_file = Path(_model_path(model)) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in model folder {str(config_file.parent)!r}")
    config = json.loads(config_file.read_text())
    vocab = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size")
    if not isinstance(vocab, int) or vocab < 2:
        raise ValueError(f"{config_file}: no usable vocab_size ({vocab!r})")
    return vocab


def _model_label(model: str) -> str:
    """What the lines call the model: the folder's name (the default: "llama-3.1-8b")."""
    return model if model.startswith("builtin:") else Path(model).name


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"rates must be numbers separated by commas: {text!r}"
        ) from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be positive: {text!r}")
    return rates


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
