"""CPU generation throughput of the engine (`LLM.generate`), one JSON line per batch size.

Default model: a 4-layer Llama with random weights (load_format="dummy"; hidden 1024, 16 heads,
8 KV heads, MLP 2816, vocab 32000: about 110M parameters), written as a config-only folder.
`--model builtin:tiny-reasoner` (or a model folder) measures a real checkpoint instead.
Prompts are random token ids (seeded); decoding is greedy with ignore_eos, so every request
generates exactly --output-len tokens.

    .venv/bin/python benchmarks/cpu_throughput.py [--model M] [--batch-sizes 1 32]
        [--input-len 128] [--output-len 128] [--dtype float32] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from llmservice import LLM, SamplingParams

LLAMA_4_LAYERS: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 4,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="folder or builtin:<name>; default: 4-layer random Llama"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        model, load_format = args.model, "auto"
        if model is None:
            model, load_format = scratch, "dummy"
            (Path(scratch) / "config.json").write_text(json.dumps(LLAMA_4_LAYERS))
        started = time.perf_counter()
        llm = LLM(
            model,
            load_format=load_format,
            dtype=args.dtype,
            device="cpu",
            max_num_seqs=max(args.batch_sizes),
            max_model_len=args.input_len + args.output_len,
        )
        startup_s = time.perf_counter() - started
        vocab = llm.engine_core.model_config.vocab_size
        rng = random.Random(0)
        params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True)
        warmup = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
        llm.generate({"prompt_token_ids": [rng.randrange(vocab) for _ in range(16)]}, warmup)
        for batch in args.batch_sizes:
            prompts = [
                {"prompt_token_ids": [rng.randrange(vocab) for _ in range(args.input_len)]}
                for _ in range(batch)
            ]
            started = time.perf_counter()
            outputs = llm.generate(prompts, params)
            elapsed = time.perf_counter() - started
            generated = sum(len(o.outputs[0].token_ids) for o in outputs)
            print(
                json.dumps(
                    {
                        "model": args.model or "llama-4-layers-dummy",
                        "dtype": args.dtype,
                        "batch": batch,
                        "input_len": args.input_len,
                        "output_len": args.output_len,
                        "output_tokens_per_s": round(generated / elapsed, 1),
                        "total_tokens_per_s": round(
                            (generated + batch * args.input_len) / elapsed, 1
                        ),
                        "elapsed_s": round(elapsed, 2),
                        "startup_s": round(startup_s, 2),
                        "torch_threads": torch.get_num_threads(),
                        "cpus": os.cpu_count(),
                        "machine": platform.processor() or platform.machine(),
                        "torch": torch.__version__,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
