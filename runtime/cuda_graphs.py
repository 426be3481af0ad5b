"""CUDA graphs of the decode forward pass, captured once per batch size of a ladder.

A pure-decode step (one new token per sequence) launches a few hundred small kernels; replaying
a captured graph launches them all at once, so the GPU no longer waits on Python between them.
A graph replays fixed addresses, so its inputs live in static device buffers that each step
overwrites: the step's arrays are written into pinned host buffers, copied with non-blocking
copies, and the graph of the next ladder size at or above the batch is replayed. Padding rows
write no K/V (slot -1) and attend to one token of the null block 0; their outputs are ignored.

Under async scheduling the host writes step N+1's staging while step N's copies may still be
queued, so the pinned staging is double-buffered (the engine waits for step N-1, which used the
other buffer, before it prepares step N+1), and rows whose token is still on the device (a
placeholder) are filled from the previous step's sampled tokens before the replay.

The decode attention kernel sizes its grid from the block table's width, so every graph sees
the full-width table (`max_model_len` tokens): its split count is fixed per batch size.

Cascade steps (many sequences sharing prefix blocks, model_inputs.CascadePolicy) get graphs of
their own, captured for the ladder sizes from `cascade_min_seqs` on: their attention reads the
shared prefix's length and table row from a static device tensor, so one graph serves every
prefix. Run eagerly, such a step at ~500 sequences was bound by its ~400 kernel launches
(33 ms per step against ~12 ms of GPU work on an H100).
"""

from __future__ import annotations

import numpy as np
import torch

from llmservice.runtime.attention_metadata import AttentionMetadata
from llmservice.runtime.models.decoder import DecoderForCausalLM

# Below 8 every size gets its own graph; above, padding wastes at most 1/8 to 1/3 of a step.
_SMALL_SIZES = (1, 2, 4, 8)
_LADDER_STEPS = ((64, 8), (128, 16), (256, 32), (1024, 64))


def capture_sizes(max_batch_size: int) -> list[int]:
    """The ladder of batch sizes, ascending, none above `max_batch_size` (which is included)."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    sizes = list(_SMALL_SIZES)
    size = sizes[-1]
    for limit, step in _LADDER_STEPS:
        while size + step <= limit:
            size += step
            sizes.append(size)
    kept = [s for s in sizes if s < max_batch_size]
    return [*kept, max_batch_size]


class DecodeGraphs:
    """Static decode inputs, one captured graph per ladder size, and their replay."""

    def __init__(
        self,
        model: DecoderForCausalLM,
        kv_caches: list[torch.Tensor],
        max_batch_size: int,
        max_model_len: int,
        block_size: int,
        device: torch.device,
        cascade_min_seqs: int | None = None,
    ) -> None:
        self.model = model
        self.max_model_len = max_model_len
        max_blocks_per_seq = -(-max_model_len // block_size)
        self.kv_caches = kv_caches
        self.sizes = capture_sizes(max_batch_size)
        self.cascade_sizes = (
            [] if cascade_min_seqs is None else [s for s in self.sizes if s >= cascade_min_seqs]
        )
        """The ladder sizes with a cascade graph too (none without `cascade_min_seqs`)."""
        self.device = device
        size = self.sizes[-1]
        # Static device inputs; graph b reads rows [:b].
        self.input_ids = torch.zeros(size, dtype=torch.int64, device=device)
        self.positions = torch.zeros(size, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((size,), -1, dtype=torch.int64, device=device)
        self.seq_lens = torch.ones(size, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(size, max_blocks_per_seq, dtype=torch.int32, device=device)
        # One new token per sequence: sequence i's token is row i, for every batch size.
        self.query_start_loc = torch.arange(size + 1, dtype=torch.int32, device=device)
        # (prefix_blocks, prefix_row) of a cascade step; 1 block of row 0 until one runs.
        self.cascade_prefix = torch.tensor([1, 0], dtype=torch.int32, device=device)
        # Pinned staging, two buffers used in turn: int64 rows (ids, positions, slots), int32
        # seq_lens, flat block table.
        self._host_rows = torch.zeros(2, 3, size, dtype=torch.int64, pin_memory=True)
        self._host_seq_lens = torch.zeros(2, size, dtype=torch.int32, pin_memory=True)
        self._host_tables = torch.zeros(
            2, size * max_blocks_per_seq, dtype=torch.int32, pin_memory=True
        )
        self._host_prefix = torch.zeros(2, 2, dtype=torch.int32, pin_memory=True)
        # Keyed by (batch size, cascade): the plain graphs and the cascade ones.
        self._graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}
        self._outputs: dict[tuple[int, bool], torch.Tensor] = {}  # (b, hidden) per graph
        self.num_replays = 0
        """Decode steps served by a graph since start-up."""
        self.num_cascade_replays = 0
        """Of those, the steps served by a cascade graph."""

    @property
    def max_batch_size(self) -> int:
        """The largest batch a graph serves."""
        return self.sizes[-1]

    def graph_size(self, num_seqs: int, cascade: bool = False) -> int | None:
        """The ladder size a batch of `num_seqs` decodes is padded to (None: run eagerly)."""
        for size in self.cascade_sizes if cascade else self.sizes:
            if size >= num_seqs:
                return size
        return None

    @torch.inference_mode()
    def capture(self) -> None:
        """Warm up and capture every graph, largest first (smaller graphs reuse its memory)."""
        pool = torch.cuda.graph_pool_handle()
        keys = [(size, False) for size in self.sizes]
        keys += [(size, True) for size in self.cascade_sizes]
        for key in sorted(keys, reverse=True):
            # Warm-up outside the graph compiles the Triton kernels for this shape.
            self._forward(*key)
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._outputs[key] = self._forward(*key)
            self._graphs[key] = graph
        torch.cuda.synchronize(self.device)

    def run(
        self,
        input_ids: np.ndarray,  # (n,) int64
        positions: np.ndarray,  # (n,) int64
        slot_mapping: np.ndarray,  # (n,) int64
        seq_lens: np.ndarray,  # (n,) int32
        block_tables: np.ndarray,  # (n, width) int32, width <= max_blocks_per_seq
        feed: tuple[torch.Tensor, torch.Tensor] | None = None,
        cascade_prefix: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Replay the decode graph for these n sequences; returns (n, hidden) hidden states.

        `feed` = (rows, tokens), device tensors: input_ids[rows] = tokens before the replay.
        `cascade_prefix` = (prefix_blocks, prefix_row): replay the cascade graph.
        """
        num_seqs, width = block_tables.shape
        cascade = cascade_prefix is not None
        size = self.graph_size(num_seqs, cascade)
        if size is None:
            kind = "cascade graph" if cascade else "graph"
            raise ValueError(f"no {kind} for {num_seqs} sequences")
        buffer = self.num_replays % 2
        host_rows = self._host_rows[buffer]
        rows = host_rows.numpy()
        rows[0, :num_seqs], rows[1, :num_seqs], rows[2, :num_seqs] = (
            input_ids,
            positions,
            slot_mapping,
        )
        rows[:2, num_seqs:size] = 0
        rows[2, num_seqs:size] = -1  # padding rows write no K/V
        host_seq_lens = self._host_seq_lens[buffer].numpy()
        host_seq_lens[:num_seqs] = seq_lens
        host_seq_lens[num_seqs:size] = 1  # one token of the null block
        tables = self._host_tables[buffer, : size * width].view(size, width)
        tables_np = tables.numpy()
        tables_np[:num_seqs] = block_tables
        tables_np[num_seqs:] = 0
        # NOTE: only the first `width` columns are copied; the columns past a sequence's length
        # may hold stale block ids, which the kernels never read (they stop at seq_len).
        self.input_ids[:size].copy_(host_rows[0, :size], non_blocking=True)
        self.positions[:size].copy_(host_rows[1, :size], non_blocking=True)
        self.slot_mapping[:size].copy_(host_rows[2, :size], non_blocking=True)
        self.seq_lens[:size].copy_(self._host_seq_lens[buffer, :size], non_blocking=True)
        self.block_tables[:size, :width].copy_(tables, non_blocking=True)
        if cascade_prefix is not None:
            host_prefix = self._host_prefix[buffer]
            host_prefix.numpy()[:] = cascade_prefix
            self.cascade_prefix.copy_(host_prefix, non_blocking=True)
            self.num_cascade_replays += 1
        if feed is not None:
            self.input_ids.index_copy_(0, feed[0], feed[1])
        self._graphs[size, cascade].replay()
        self.num_replays += 1
        return self._outputs[size, cascade][:num_seqs]

    def _forward(self, size: int, cascade: bool) -> torch.Tensor:
        meta = AttentionMetadata(
            slot_mapping=self.slot_mapping[:size],
            block_tables=self.block_tables[:size],
            seq_lens=self.seq_lens[:size],
            query_start_loc=self.query_start_loc[: size + 1],
            max_query_len=1,
            max_seq_len=self.max_model_len,
            num_decodes=size,
            cascade_prefix=self.cascade_prefix if cascade else None,
        )
        hidden: torch.Tensor = self.model(
            self.input_ids[:size], self.positions[:size], self.kv_caches, meta
        )  # (size, hidden)
        return hidden
