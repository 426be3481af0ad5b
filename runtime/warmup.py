"""Start-up warm-up: run every kind of step once, so no kernel compiles while serving.

Triton compiles a kernel variant the first time it is launched with a new set of compile-time
constants. The profiling pass compiles the prefill path and graph capture the decode path, but
three kinds of step run eagerly with variants of their own: a mixed batch (decodes through the
decode kernel, prefill chunks through the extend kernel, whose tiles depend on how long the
chunks are), a decode batch with cascade attention, and the logits of a few rows. On a fresh
machine each variant took seconds to compile inside the first W1 batches (BENCHMARKS.md).

The steps use made-up requests whose sequences all share the first blocks of the real cache:
it is empty at start-up and no request owns those blocks, so what they write is never read.
`warm_up_logits` also runs the lm_head at every padded row count, so cuBLAS loads its kernels
before serving.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from llmservice.runtime.model_inputs import HostInputs, prepare_host_inputs
from llmservice.scheduler import Request, RequestLimits, ScheduledChunk

_LIMITS = RequestLimits(max_tokens=1)


def warm_up_steps(
    block_size: int, num_blocks: int, max_model_len: int
) -> list[tuple[str, HostInputs]]:
    """The warm-up steps that fit the cache and max_model_len, each with a label."""
    # Every sequence uses blocks 1..n of the cache; the longest context decides n.
    longest = min(512, max_model_len - 1, (num_blocks - 1) * block_size - 1)
    if longest < 2:
        return []
    table = tuple(range(1, -(-(longest + 1) // block_size) + 1))

    def decode(rid: str, context: int) -> tuple[ScheduledChunk, Request]:
        # The last prompt token of a `context`-token prompt: one new token that samples.
        chunk = ScheduledChunk(rid, context - 1, 1, table, True)
        return chunk, Request(rid, [0] * context, _LIMITS, arrival_time=0.0)

    def prefill(rid: str, length: int) -> tuple[ScheduledChunk, Request]:
        chunk = ScheduledChunk(rid, 0, length, table, True)
        return chunk, Request(rid, [0] * length, _LIMITS, arrival_time=0.0)

    def step(*pairs: tuple[ScheduledChunk, Request]) -> HostInputs:
        return prepare_host_inputs([c for c, _ in pairs], [r for _, r in pairs], block_size)

    short = max(1, min(16, longest // 4))
    steps = [
        # Decodes plus one long chunk: the extend kernel's prefill-heavy tiles.
        ("mixed, long chunk", step(*(decode(f"d{i}", longest) for i in range(4)),
                                   prefill("p", longest))),
        # Decodes plus short chunks: its decode-heavy tiles.
        ("mixed, short chunks", step(*(decode(f"d{i}", longest) for i in range(4)),
                                     *(prefill(f"p{i}", short) for i in range(3)))),
        # One to four rows of logits (the lm_head's small-batch path).
        *((f"decode x{n}", step(*(decode(f"d{i}", longest) for i in range(n)))) for n in (1, 2, 3, 4)),
    ]  # fmt: skip
    shared = (longest - 1) // block_size  # every context goes past the shared blocks
    if shared >= 1:
        # Eight sequences sharing their first blocks: cascade attention, forced.
        cascade = step(*(decode(f"c{i}", longest) for i in range(8)))
        steps.append(("cascade", dataclasses.replace(cascade, cascade_prefix_blocks=shared)))
    return steps


def warm_up(
    compute_logits: Callable[[HostInputs], torch.Tensor],
    block_size: int,
    num_blocks: int,
    max_model_len: int,
) -> None:
    """Run every warm-up step through `compute_logits` (the runner's forward + logits)."""
    with torch.inference_mode():
        for _, host in warm_up_steps(block_size, num_blocks, max_model_len):
            compute_logits(host).argmax(dim=-1)


def warm_up_logits(
    compute_logits: Callable[[torch.Tensor], torch.Tensor],
    row_counts: Sequence[int],
    hidden_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    """Run the lm_head once at each row count. cuBLAS loads a GEMM kernel lazily the first time
    a shape needs it, which blocked the host for ~0.3 s inside serving steps
    (benchmarks/profile_step.py)."""
    with torch.inference_mode():
        for rows in row_counts:
            compute_logits(torch.zeros(rows, hidden_size, dtype=dtype, device=device)).argmax(-1)
