"""Host side of cascade attention: finding the shared prefix of a decode batch, the policy,
and what prepare_host_inputs hands the runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmservice.runtime import model_inputs
from llmservice.runtime.model_inputs import (
    CascadePolicy,
    SharedPrefix,
    choose_cascade,
    find_shared_prefix,
    prepare_host_inputs,
)
from llmservice.scheduler import Request, RequestLimits, ScheduledChunk

BS = 16


def tables(*rows: list[int]) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.zeros((len(rows), width), dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def full_lens(block_tables: np.ndarray, own_tokens: int = 1) -> np.ndarray:
    """Contexts that fill every block but the last, which holds `own_tokens`."""
    blocks = (block_tables != 0).sum(axis=1)
    return (blocks - 1) * BS + own_tokens


def test_every_row_shares_the_leading_blocks() -> None:
    t = tables(*[[1, 2, 3, 10 + i, 20 + i] for i in range(5)])
    assert find_shared_prefix(t, full_lens(t), BS) == SharedPrefix(row=0, num_blocks=3, num_seqs=5)


def test_tables_that_diverge_in_the_middle_keep_the_prefix_that_saves_most() -> None:
    # Rows 0-4 share 6 blocks; rows 5-9 share only the first 3 with them.
    long = [[1, 2, 3, 4, 5, 6, 30 + i] for i in range(5)]
    short = [[1, 2, 3, 40 + i, 50 + i, 60 + i, 70 + i] for i in range(5)]
    t = tables(*long, *short)
    # 10 sequences x 3 blocks saves 9 x 3 = 27 reads; 5 x 6 saves only 4 x 6 = 24.
    assert find_shared_prefix(t, full_lens(t), BS) == SharedPrefix(0, 3, 10)
    # With 10 shared blocks among the first five, those win: 4 x 10 = 40 > 9 x 3 = 27.
    long10 = [[*range(1, 11), 30 + i] for i in range(5)]
    t = tables(*long10, *short)
    assert find_shared_prefix(t, full_lens(t), BS) == SharedPrefix(0, 10, 5)


def test_a_sequence_whose_whole_context_is_the_prefix_does_not_share_it() -> None:
    t = tables([1, 2, 3, 7], [1, 2, 3, 8], [1, 2, 3])
    seq_lens = np.array([3 * BS + 5, 3 * BS + 1, 3 * BS])  # row 2 ends on its third block
    # Row 2 may share only 2 blocks (its third holds its new token). All three on 2 blocks
    # save (3 - 1) x 2 = 4 block reads; rows 0 and 1 alone on 3 blocks save (2 - 1) x 3 = 3.
    assert find_shared_prefix(t, seq_lens, BS) == SharedPrefix(0, 2, 3)
    seq_lens[2] = 2 * BS + 1  # now row 2 keeps one own token after two blocks: same answer
    assert find_shared_prefix(t, seq_lens, BS) == SharedPrefix(0, 2, 3)
    seq_lens[2] = BS  # one block, the new token inside it: shares nothing
    assert find_shared_prefix(t, seq_lens, BS) == SharedPrefix(0, 3, 2)


def test_requests_holding_their_own_copy_of_the_prefix_are_left_out() -> None:
    # Rows 0-2 computed the prompt prefix in the same step (own blocks); rows 3-9 hit the cache.
    own = [[100 + 10 * i + j for j in range(4)] + [200 + i] for i in range(3)]
    cached = [[1, 2, 3, 4, 300 + i] for i in range(7)]
    t = tables(*own, *cached)
    assert find_shared_prefix(t, full_lens(t), BS) == SharedPrefix(3, 4, 7)


@pytest.mark.parametrize(
    "rows",
    [
        [[1, 2, 3]],  # one sequence
        [[1, 2], [3, 4], [5, 6]],  # nothing shared
        [[1], [1]],  # a shared block that holds both new tokens
    ],
)
def test_no_shared_prefix(rows: list[list[int]]) -> None:
    t = tables(*rows)
    assert find_shared_prefix(t, full_lens(t), BS) is None


def test_policy_floors() -> None:
    policy = CascadePolicy(min_seqs=8, min_prefix_tokens=256, min_saved_tokens=32768)
    assert policy.pays(SharedPrefix(0, 128, 500), BS)  # W4: 2048 tokens x 500 sequences
    assert not policy.pays(SharedPrefix(0, 128, 7), BS)  # too few sequences
    assert not policy.pays(SharedPrefix(0, 15, 1000), BS)  # 240 tokens: too short
    assert not policy.pays(SharedPrefix(0, 16, 100), BS)  # 99 x 256 = 25K reads saved
    assert policy.pays(SharedPrefix(0, 16, 200), BS)  # 199 x 256 = 51K
    default = CascadePolicy()
    assert default.pays(SharedPrefix(0, 2048 // BS, 500), BS)  # W4's decode steps
    assert not default.pays(SharedPrefix(0, 2048 // BS, 17), BS)  # measured slower
    assert not default.pays(SharedPrefix(0, 256 // BS, 129), BS)  # measured slower
    t = tables(*[[1, 2, 10 + i] for i in range(7)])
    lenient = CascadePolicy(min_seqs=8, min_prefix_tokens=1, min_saved_tokens=0)
    assert choose_cascade(t, full_lens(t), BS, lenient) is None  # 7 < min_seqs: no scan


def _decode_batch(num_seqs: int, prefix_blocks: int) -> tuple[list[ScheduledChunk], list[Request]]:
    limits = RequestLimits(max_tokens=8)
    chunks, requests = [], []
    for i in range(num_seqs):
        prompt = list(range(3, 3 + prefix_blocks * BS + 4))
        requests.append(Request(f"r{i}", prompt, limits, arrival_time=0.0))
        block_ids = (*range(1, prefix_blocks + 1), 100 + i)
        chunks.append(ScheduledChunk(f"r{i}", len(prompt) - 1, 1, block_ids, True))
    return chunks, requests


def test_prepare_host_inputs_marks_cascade_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    chunks, requests = _decode_batch(num_seqs=3, prefix_blocks=2)
    host = prepare_host_inputs(chunks, requests, BS)
    assert host.cascade_prefix_blocks == 0  # the default policy: 3 sequences are too few
    monkeypatch.setattr(model_inputs, "CASCADE_POLICY", CascadePolicy(2, 16, 0))
    host = prepare_host_inputs(chunks, requests, BS)
    assert (host.cascade_prefix_blocks, host.cascade_prefix_row) == (2, 0)
    meta = host.to_device(torch.device("cpu")).attn_metadata
    assert meta.cascade_prefix is not None and meta.cascade_prefix.tolist() == [2, 0]
    assert meta.cascade_prefix.dtype == torch.int32
    # A mixed batch (a prefill chunk) never cascades.
    mixed = [ScheduledChunk("r0", 0, len(requests[0].prompt_token_ids), chunks[0].block_ids, True)]
    host = prepare_host_inputs([*mixed, *chunks[1:]], requests, BS)
    assert host.cascade_prefix_blocks == 0
