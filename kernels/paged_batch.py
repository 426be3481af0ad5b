"""Random paged-attention batches for kernel tests and benchmarks.

A batch is what the model runner hands the attention kernels in one step: the new tokens of
several sequences (flat), each sequence's cached prefix already in a shuffled paged KV cache,
and the new tokens' K/V with their slots (to be written by `write_kv_cache` before attention).
The dense per-sequence K/V is kept too, so tests can check against plain attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmservice.kernels import reference


@dataclass(frozen=True)
class PagedBatch:
    """One attention step's inputs, plus the dense K/V they were made from."""

    query: torch.Tensor
    """(num_tokens, num_heads, head_dim): the new tokens of every sequence, flat."""
    key: torch.Tensor
    """(num_tokens, num_kv_heads, head_dim): the new tokens' keys (not yet in the cache)."""
    value: torch.Tensor
    """(num_tokens, num_kv_heads, head_dim): the new tokens' values (not yet in the cache)."""
    slot_mapping: torch.Tensor
    """(num_tokens,) int64: the cache slot of each new token."""
    k_cache: torch.Tensor
    """(num_blocks, block_size, num_kv_heads, head_dim), the cached prefixes filled in."""
    v_cache: torch.Tensor
    """(num_blocks, block_size, num_kv_heads, head_dim), the cached prefixes filled in."""
    block_tables: torch.Tensor
    """(num_seqs, max_blocks_per_seq) int32, padded with the null block 0."""
    seq_lens: torch.Tensor
    """(num_seqs,) int32: context length including the new tokens."""
    query_start_loc: torch.Tensor
    """(num_seqs + 1,) int32: cumulative offsets of each sequence's new tokens."""
    dense_keys: tuple[torch.Tensor, ...]
    """Per sequence (seq_len, num_kv_heads, head_dim); empty when not kept."""
    dense_values: tuple[torch.Tensor, ...]
    """Per sequence (seq_len, num_kv_heads, head_dim); empty when not kept."""

    def attention_args(
        self, scale: float
    ) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float
    ]:
        """Writes the new tokens' K/V into the cache (as the runner does before attention)
        and returns the positional arguments of paged_attention."""
        reference.write_kv_cache(
            self.key, self.value, self.k_cache, self.v_cache, self.slot_mapping
        )
        return (
            self.query,
            self.k_cache,
            self.v_cache,
            self.block_tables,
            self.seq_lens,
            self.query_start_loc,
            scale,
        )

    def poison_new_slots(self) -> None:
        """NaN in the cache slots of the new tokens (once the reference has read them): a kernel
        told to read the new tokens' K/V from (key, value) must not read them from the cache."""
        for cache in (self.k_cache, self.v_cache):
            cache.view(-1, *cache.shape[2:])[self.slot_mapping] = float("nan")

    def poisoned_out(self) -> torch.Tensor:
        """An output buffer full of NaN: any element a kernel fails to write shows up."""
        return torch.full_like(self.query, float("nan"))


def make_paged_batch(
    seq_lens: Sequence[int],
    query_lens: Sequence[int],
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    seed: int = 0,
    extra_table_columns: int = 0,
    keep_dense: bool = True,
) -> PagedBatch:
    """Builds a random batch; sequence i has seq_lens[i] tokens of which query_lens[i] are new.

    Blocks are assigned in a shuffled order (never the null block 0), and every cache slot
    nobody owns holds random values, so a kernel that reads the wrong block gets garbage.
    `keep_dense=False` skips the dense copies (benchmarks at large sizes).
    """
    if len(seq_lens) != len(query_lens):
        raise ValueError("seq_lens and query_lens must have the same length")
    if any(not 1 <= q <= s for q, s in zip(query_lens, seq_lens, strict=True)):
        raise ValueError("every sequence needs 1 <= query_len <= seq_len")
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    cpu_gen = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype)

    blocks_per_seq = [-(-s // block_size) for s in seq_lens]
    num_blocks = 1 + sum(blocks_per_seq) + 3  # null block + owned + a few never used
    order = (torch.randperm(num_blocks - 1, generator=cpu_gen) + 1).tolist()
    max_blocks = max(blocks_per_seq) + extra_table_columns
    block_tables = torch.zeros(len(seq_lens), max_blocks, dtype=torch.int32)
    k_cache = randn(num_blocks, block_size, num_kv_heads, head_dim)
    v_cache = randn(num_blocks, block_size, num_kv_heads, head_dim)

    keys, values, slots, dense_k, dense_v = [], [], [], [], []
    next_block = 0
    for i, (seq_len, q_len) in enumerate(zip(seq_lens, query_lens, strict=True)):
        table = order[next_block : next_block + blocks_per_seq[i]]
        next_block += blocks_per_seq[i]
        block_tables[i, : len(table)] = torch.tensor(table, dtype=torch.int32)
        seq_slots = torch.tensor(
            [table[p // block_size] * block_size + p % block_size for p in range(seq_len)]
        )
        k, v = randn(seq_len, num_kv_heads, head_dim), randn(seq_len, num_kv_heads, head_dim)
        prefix = seq_len - q_len
        # The cached prefix goes straight into the cache, one block-row at a time.
        flat_k = k_cache.view(-1, num_kv_heads, head_dim)
        flat_v = v_cache.view(-1, num_kv_heads, head_dim)
        flat_k[seq_slots[:prefix].to(device)] = k[:prefix]
        flat_v[seq_slots[:prefix].to(device)] = v[:prefix]
        keys.append(k[prefix:])
        values.append(v[prefix:])
        slots.append(seq_slots[prefix:])
        if keep_dense:
            dense_k.append(k)
            dense_v.append(v)

    query_start_loc = torch.zeros(len(seq_lens) + 1, dtype=torch.int32)
    query_start_loc[1:] = torch.cumsum(torch.tensor(list(query_lens)), 0)
    return PagedBatch(
        query=randn(sum(query_lens), num_heads, head_dim),
        key=torch.cat(keys),
        value=torch.cat(values),
        slot_mapping=torch.cat(slots).to(device=device, dtype=torch.int64),
        k_cache=k_cache,
        v_cache=v_cache,
        block_tables=block_tables.to(device),
        seq_lens=torch.tensor(list(seq_lens), dtype=torch.int32, device=device),
        query_start_loc=query_start_loc.to(device),
        dense_keys=tuple(dense_k),
        dense_values=tuple(dense_v),
    )
