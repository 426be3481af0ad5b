"""Turns the scheduler's output into the flat tensors of one forward pass.

Built on the host first (`HostInputs`), so the CUDA-graph path can copy the same arrays into
its static buffers instead (cuda_graphs.py). Every scheduled chunk contributes `num_new_tokens`
consecutive tokens at positions `[num_computed_tokens, num_computed_tokens + num_new_tokens)`;
a chunk that `samples` also contributes its last token's row to `logits_indices`.

Under async scheduling a chunk's last token may be a placeholder: sampled by the previous step
on the device and not yet on the host. Its row holds 0 here and is listed in `fed_rows`; the
runner fills it on the device from the previous step's sampled tokens before the forward pass.

A pure decode batch whose sequences share prefix blocks (prefix caching gives every request
with the same prompt prefix the same physical blocks) may run cascade attention, which reads
those blocks once per step instead of once per sequence; `choose_cascade` finds the shared
prefix on the host and `CASCADE_POLICY` decides whether it pays.
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


@dataclass(frozen=True, slots=True)
class HostInputs:
    """The arrays of one forward pass on the host, before they go to the device."""

    input_ids: np.ndarray
    """(num_tokens,) int64."""
    positions: np.ndarray
    """(num_tokens,) int64."""
    slot_mapping: np.ndarray
    """(num_tokens,) int64."""
    block_tables: np.ndarray
    """(num_seqs, max_blocks_per_seq) int32, padded with block 0."""
    seq_lens: np.ndarray
    """(num_seqs,) int64 context lengths including this step's tokens."""
    query_start_loc: np.ndarray
    """(num_seqs + 1,) int64."""
    logits_indices: np.ndarray
    """(num_sampled,) int64."""
    max_query_len: int
    """The most new tokens of one sequence (1: a pure decode step)."""
    sampled_request_ids: tuple[str, ...]
    """The request of each logits row."""
    fed_rows: tuple[int, ...] = ()
    """Token rows that are placeholders (async scheduling), to fill on the device."""
    fed_request_ids: tuple[str, ...] = ()
    """The request of each fed row: its token is that request's previous sample."""
    num_decodes: int = 0
    """The first sequences, with one new token each (decodes are laid out first)."""
    cascade_prefix_blocks: int = 0
    """Leading blocks of `cascade_prefix_row` that many sequences share (0: no cascade)."""
    cascade_prefix_row: int = 0
    """The sequence whose table holds the shared prefix blocks."""

    @property
    def is_pure_decode(self) -> bool:
        """Every sequence has exactly one new token and samples it (a graph can run it)."""
        return self.max_query_len == 1 and len(self.logits_indices) == len(self.seq_lens)

    def to_device(self, device: torch.device) -> ModelInputs:
        """The tensors of this step on `device`."""

        def to_device(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return staged(torch.from_numpy(array).to(dtype), device)

        return ModelInputs(
            input_ids=to_device(self.input_ids, torch.int64),
            positions=to_device(self.positions, torch.int64),
            attn_metadata=AttentionMetadata(
                slot_mapping=to_device(self.slot_mapping, torch.int64),
                block_tables=to_device(self.block_tables, torch.int32),
                seq_lens=to_device(self.seq_lens, torch.int32),
                query_start_loc=to_device(self.query_start_loc, torch.int32),
                max_query_len=self.max_query_len,
                max_seq_len=int(self.seq_lens.max()),
                num_decodes=self.num_decodes,
                cascade_prefix=(
                    to_device(
                        np.array([self.cascade_prefix_blocks, self.cascade_prefix_row]),
                        torch.int32,
                    )
                    if self.cascade_prefix_blocks > 0
                    else None
                ),
            ),
            logits_indices=to_device(self.logits_indices, torch.int64),
            sampled_request_ids=self.sampled_request_ids,
        )


def staged(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`host` on `device`; to a GPU through pinned memory, so the copy is queued and the host
    goes on. (A non-blocking copy from pageable memory waits for the GPU to finish the work
    queued before it: the next step's launches then started only once the previous step had
    ended, 4-6 ms of idle GPU per W3 step on an H100.) The pinned blocks come from torch's
    caching host allocator, which reuses a block only after its copy has completed."""
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def prepare_inputs(
    chunks: Sequence[ScheduledChunk],
    requests: Sequence[Request],
    block_size: int,
    device: torch.device,
) -> ModelInputs:
    """The flat tensors of `chunks` on `device` (requests[i] is the request of chunks[i])."""
    return prepare_host_inputs(chunks, requests, block_size).to_device(device)


def prepare_host_inputs(
    chunks: Sequence[ScheduledChunk], requests: Sequence[Request], block_size: int
) -> HostInputs:
    """The host arrays of `chunks` (requests[i] is the request of chunks[i]).

    Sequences are laid out decodes first (one new token each), then the other chunks, so the
    attention of a mixed batch can run its decodes through the decode kernel (`num_decodes`).
    """
    num_seqs = len(chunks)
    decodes = [i for i, c in enumerate(chunks) if c.num_new_tokens == 1]
    num_decodes = len(decodes)
    if 0 < num_decodes < num_seqs and decodes[-1] != num_decodes - 1:
        order = decodes + [i for i, c in enumerate(chunks) if c.num_new_tokens != 1]
        chunks = [chunks[i] for i in order]
        requests = [requests[i] for i in order]
    q_lens = np.fromiter((c.num_new_tokens for c in chunks), np.int64, num_seqs)
    starts = np.fromiter((c.num_computed_tokens for c in chunks), np.int64, num_seqs)
    query_start_loc = np.zeros(num_seqs + 1, dtype=np.int64)
    np.cumsum(q_lens, out=query_start_loc[1:])
    num_tokens = int(query_start_loc[-1])
    seq_lens = starts + q_lens
    max_query_len = int(q_lens.max())
    seq_of_token = np.repeat(np.arange(num_seqs), q_lens)  # (num_tokens,)
    fed_rows: list[int] = []
    fed_ids: list[str] = []
    if max_query_len == 1:
        # Pure decode: one token per sequence, no concatenation of ranges.
        ids: list[int] = []
        for i, (chunk, request) in enumerate(zip(chunks, requests, strict=True)):
            position = chunk.num_computed_tokens
            if position < request.num_tokens:
                ids.append(request.all_token_ids[position])
            else:
                ids.append(0)
                fed_rows.append(i)
                fed_ids.append(request.request_id)
        input_ids = np.array(ids, dtype=np.int64)
        positions = starts
    else:
        pieces = []
        for i, (request, start, q_len) in enumerate(zip(requests, starts, q_lens, strict=True)):
            end = int(start + q_len)
            piece = _token_range(request, int(start), end)
            if end > request.num_tokens:
                if end != request.num_tokens + 1 or len(piece) != q_len - 1:
                    raise ValueError(
                        f"request {request.request_id!r}: chunk [{start}, {end}) has more than "
                        f"its last token unknown ({request.num_tokens} tokens known)"
                    )
                piece = np.append(piece, 0)
                fed_rows.append(int(query_start_loc[i + 1]) - 1)
                fed_ids.append(request.request_id)
            pieces.append(piece)
        input_ids = np.concatenate(pieces)
        # Position of each token: its chunk's first position plus its offset inside the chunk.
        positions = np.arange(num_tokens) - query_start_loc[seq_of_token] + starts[seq_of_token]

    max_blocks = max(len(c.block_ids) for c in chunks)
    block_tables = np.zeros((num_seqs, max_blocks), dtype=np.int32)  # padded with null block 0
    for i, chunk in enumerate(chunks):
        block_tables[i, : len(chunk.block_ids)] = chunk.block_ids
    block_of_token = block_tables[seq_of_token, positions // block_size].astype(np.int64)
    slot_mapping = block_of_token * block_size + positions % block_size

    samples = np.fromiter((c.samples for c in chunks), bool, num_seqs)
    cascade = None
    if max_query_len == 1:
        cascade = choose_cascade(block_tables, seq_lens, block_size, CASCADE_POLICY)
    return HostInputs(
        input_ids=input_ids,
        positions=positions,
        slot_mapping=slot_mapping,
        block_tables=block_tables,
        seq_lens=seq_lens,
        query_start_loc=query_start_loc,
        logits_indices=query_start_loc[1:][samples] - 1,
        max_query_len=max_query_len,
        sampled_request_ids=tuple(c.request_id for c, s in zip(chunks, samples, strict=True) if s),
        fed_rows=tuple(fed_rows),
        fed_request_ids=tuple(fed_ids),
        num_decodes=num_decodes,
        cascade_prefix_blocks=cascade.num_blocks if cascade else 0,
        cascade_prefix_row=cascade.row if cascade else 0,
    )


@dataclass(frozen=True, slots=True)
class SharedPrefix:
    """Blocks at the start of several sequences' block tables (the same physical blocks)."""

    row: int
    """A sequence whose table starts with the shared blocks."""
    num_blocks: int
    """How many leading blocks are shared."""
    num_seqs: int
    """Sequences that share them and keep at least one token of their own after them."""


@dataclass(frozen=True, slots=True)
class CascadePolicy:
    """When a pure decode batch is worth cascade attention (a prefix pass and a merge more).

    Measured per layer at Llama-3.1-8B shapes on an H100 (`python -m llmservice.kernels.bench
    --only cascade`): 500 sequences x 2048 shared tokens take 0.235 ms by cascade vs 0.686 ms
    by plain decode; 17 x 2048: 0.064 vs 0.044 ms; 129 x 256: 0.129 vs 0.044 ms. Plain decode
    runs at an apparent 6.7 TB/s on these batches (the shared blocks are, presumably, served
    from L2 after the first sequence reads them), so each shared token a sequence skips saves
    only ~0.6 ns, while cascade costs ~60 us more per call in those back-to-back timings
    (three launches instead of one, the partial outputs), and its steps give up the decode
    CUDA graph (they run eagerly). Hence a floor of 128K shared-token reads saved per step
    (~0.08 ms per layer); vLLM's floors of 256 tokens and 8 requests are kept below it.
    """

    min_seqs: int = 8
    """Fewest sequences that must share the prefix."""
    min_prefix_tokens: int = 256
    """Shortest shared prefix, in tokens."""
    min_saved_tokens: int = 131072
    """Fewest K/V token reads saved per step: (sharing sequences - 1) x prefix tokens."""

    def pays(self, prefix: SharedPrefix, block_size: int) -> bool:
        """Whether cascade attention over `prefix` is expected to beat plain decode attention."""
        tokens = prefix.num_blocks * block_size
        return (
            prefix.num_seqs >= self.min_seqs
            and tokens >= self.min_prefix_tokens
            and (prefix.num_seqs - 1) * tokens >= self.min_saved_tokens
        )


CASCADE_POLICY = CascadePolicy()
"""The policy prepare_host_inputs applies (tests replace it to force or forbid cascades)."""


def find_shared_prefix(
    block_tables: np.ndarray,  # (num_seqs, max_blocks) int32, padded with the null block 0
    seq_lens: np.ndarray,  # (num_seqs,) context lengths including this step's token
    block_size: int,
) -> SharedPrefix | None:
    """The shared prefix that saves the most reads: (sharing sequences - 1) x blocks, largest.

    Candidates share the most common first block (prefix caching hands the same blocks to
    every request with the cached prompt prefix; requests admitted in the same step as the one
    that computed it hold their own copies). A sequence counts for a prefix only if a token of
    its own follows it: the decode kernel needs its new token's key outside the shared part.
    None when no two sequences share a block.
    """
    num_seqs = len(seq_lens)
    if num_seqs < 2:
        return None
    firsts, first_rows, counts = np.unique(
        block_tables[:, 0], return_index=True, return_counts=True
    )
    best = int(np.argmax(counts))
    if counts[best] < 2:
        return None
    row = int(first_rows[best])
    group = np.flatnonzero(block_tables[:, 0] == firsts[best])  # (num_candidates,)
    # Blocks each candidate may share: its leading run equal to `row`'s, capped to keep a token.
    own_blocks = (seq_lens[group].astype(np.int64) - 1) // block_size
    width = int(own_blocks.max())
    if width == 0:
        return None
    same = block_tables[group, :width] == block_tables[row, :width]  # (num_candidates, width)
    runs = np.where(same.all(axis=1), width, same.argmin(axis=1))
    shareable = np.sort(np.minimum(runs, own_blocks))[::-1]  # descending
    # Taking the k longest candidates shares shareable[k - 1] blocks among k sequences.
    saved = np.arange(len(shareable)) * shareable
    k = int(np.argmax(saved)) + 1
    if saved[k - 1] == 0:
        return None
    num_blocks = int(shareable[k - 1])
    return SharedPrefix(
        row=row, num_blocks=num_blocks, num_seqs=int((shareable >= num_blocks).sum())
    )


def choose_cascade(
    block_tables: np.ndarray, seq_lens: np.ndarray, block_size: int, policy: CascadePolicy
) -> SharedPrefix | None:
    """The shared prefix of a pure decode batch if cascade attention pays for it, else None."""
    if len(seq_lens) < policy.min_seqs:
        return None  # the common case of small batches: skip the table scan
    prefix = find_shared_prefix(block_tables, seq_lens, block_size)
    return prefix if prefix is not None and policy.pays(prefix, block_size) else None


def _token_range(request: Request, start: int, end: int) -> np.ndarray:
    """Token ids at positions [start, end) of the request (prompt then output)."""
    return np.asarray(request.all_token_ids[start:end], dtype=np.int64)
