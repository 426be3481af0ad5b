"""Turns the scheduler's output into the flat tensors of one forward pass.

Kept apart from the forward itself so a faster path (CUDA graphs, persistent buffers) can reuse
or replace it. Every scheduled chunk contributes `num_new_tokens` consecutive tokens at positions
`[num_computed_tokens, num_computed_tokens + num_new_tokens)`; a chunk that `samples` also
contributes its last token's row to `logits_indices`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llmservice.runtime.attention_metadata import AttentionMetadata
from llmservice.scheduler import Request, ScheduledChunk


@dataclass(frozen=True, slots=True)
class ModelInputs:
    """The tensors of one forward pass, and which request each logits row belongs to."""

    input_ids: torch.Tensor
    """(num_tokens,) int64 token ids, every chunk's tokens end to end."""
    positions: torch.Tensor
    """(num_tokens,) int64 position of each token in its sequence."""
    attn_metadata: AttentionMetadata
    """Where the tokens' K/V live in the paged cache."""
    logits_indices: torch.Tensor
    """(num_sampled,) int64 rows of the hidden states whose logits are sampled."""
    sampled_request_ids: tuple[str, ...]
    """The request of each logits row."""


def prepare_inputs(
    chunks: Sequence[ScheduledChunk],
    requests: Sequence[Request],
    block_size: int,
    device: torch.device,
) -> ModelInputs:
    """The flat tensors of `chunks` (requests[i] is the request of chunks[i])."""
    num_seqs = len(chunks)
    q_lens = np.fromiter((c.num_new_tokens for c in chunks), np.int64, num_seqs)
    starts = np.fromiter((c.num_computed_tokens for c in chunks), np.int64, num_seqs)
    query_start_loc = np.zeros(num_seqs + 1, dtype=np.int64)
    np.cumsum(q_lens, out=query_start_loc[1:])
    num_tokens = int(query_start_loc[-1])
    seq_lens = starts + q_lens

    input_ids = np.concatenate(
        [
            _token_range(request, int(start), int(start + q_len))
            for request, start, q_len in zip(requests, starts, q_lens, strict=True)
        ]
    )
    # Position of each token: its chunk's first position plus its offset inside the chunk.
    seq_of_token = np.repeat(np.arange(num_seqs), q_lens)  # (num_tokens,)
    positions = np.arange(num_tokens) - query_start_loc[seq_of_token] + starts[seq_of_token]

    max_blocks = max(len(c.block_ids) for c in chunks)
    block_tables = np.zeros((num_seqs, max_blocks), dtype=np.int32)  # padded with null block 0
    for i, chunk in enumerate(chunks):
        block_tables[i, : len(chunk.block_ids)] = chunk.block_ids
    block_of_token = block_tables[seq_of_token, positions // block_size].astype(np.int64)
    slot_mapping = block_of_token * block_size + positions % block_size

    samples = np.fromiter((c.samples for c in chunks), bool, num_seqs)
    logits_indices = query_start_loc[1:][samples] - 1

    def to_device(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(array).to(device=device, dtype=dtype, non_blocking=True)

    return ModelInputs(
        input_ids=to_device(input_ids, torch.int64),
        positions=to_device(positions, torch.int64),
        attn_metadata=AttentionMetadata(
            slot_mapping=to_device(slot_mapping, torch.int64),
            block_tables=to_device(block_tables, torch.int32),
            seq_lens=to_device(seq_lens, torch.int32),
            query_start_loc=to_device(query_start_loc, torch.int32),
            max_query_len=int(q_lens.max()),
            max_seq_len=int(seq_lens.max()),
        ),
        logits_indices=to_device(logits_indices, torch.int64),
        sampled_request_ids=tuple(c.request_id for c, s in zip(chunks, samples, strict=True) if s),
    )


def _token_range(request: Request, start: int, end: int) -> np.ndarray:
    """Token ids at positions [start, end) of the request (prompt then output)."""
    return np.asarray(request.all_token_ids[start:end], dtype=np.int64)
