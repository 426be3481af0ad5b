"""`AttentionMetadata`: the per-step tensors every attention layer reads (built by the runner).

One forward pass covers a mixed batch: prefill chunks and decode tokens of many sequences laid
end to end. These tensors say where each token's K/V goes in the paged cache and which cached
context each sequence attends to (INTERFACES.md section 3 gives the layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class AttentionMetadata:
    """Where the batch's tokens live in the paged KV cache."""

    slot_mapping: torch.Tensor
    """(num_tokens,) int64: cache slot (block_id * block_size + offset) of each new token."""
    block_tables: torch.Tensor
    """(num_seqs, max_blocks_per_seq) int32: each sequence's blocks, padded with block 0."""
    seq_lens: torch.Tensor
    """(num_seqs,) int32: context length of each sequence including this step's tokens."""
    query_start_loc: torch.Tensor
    """(num_seqs + 1,) int32: offsets of each sequence's new tokens in the flat batch."""
    max_query_len: int
    """The most new tokens of one sequence in this step (1 for a pure decode batch)."""
    max_seq_len: int
    """The longest context in this step."""
    num_decodes: int = 0
    """The first sequences with one new token each (the runner orders decodes first), so a mixed
    batch can run them through the decode kernel; every sequence in a pure decode batch."""
    cascade_prefix: torch.Tensor | None = None
    """(2,) int32 on the device: (prefix_blocks, prefix_row) of a pure decode batch whose
    sequences share the prefix row's first prefix_blocks blocks, read once for all of them by
    cascade attention; None = plain attention. A tensor, so a CUDA graph replays any prefix."""
