"""When a prompt chunk with no cached context is faster through torch's FlashAttention (SDPA over
the chunk's own K/V, `ops.causal_attention`) than through the paged extend kernel: both timed on
one chunk of n tokens, Llama-3.1-8B heads (32 query, 8 KV, d128), bf16. Sets
model_inputs.FRESH_CHUNK_MIN_TOKENS. JSON lines.

Usage: python3 -P benchmarks/fresh_attention.py (CUDA; llmservice link tree on PYTHONPATH).
"""

from __future__ import annotations

import json

import torch

from llmservice.kernels import extend_attention, ops
from llmservice.kernels.bench import llama_batch, time_ms

HEAD_DIM = 128


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA device")
    device = torch.device("cuda")
    scale = HEAD_DIM**-0.5
    for n in (256, 512, 1024, 2048, 4096, 8192):
        batch = llama_batch([n], [n], HEAD_DIM, device)
        args = batch.attention_args(scale)
        out = torch.empty_like(batch.query)
        paged = time_ms(lambda: extend_attention.paged_attention(*args, out))  # noqa: B023
        flash = time_ms(
            lambda: ops.causal_attention(batch.query, batch.key, batch.value, scale, out)  # noqa: B023
        )
        tflop = 2 * 2 * n * n * HEAD_DIM * 32 / 2 / 1e12
        line = {"tokens": n, "paged_extend_ms": round(paged, 4),
                "causal_flash_ms": round(flash, 4), "paged_tflops": round(tflop / paged * 1e3, 1),
                "flash_tflops": round(tflop / flash * 1e3, 1)}  # fmt: skip
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
