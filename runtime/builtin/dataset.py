"""The training set of the built-in model: conversations drawn in parallel, tokenized, batched.

The trainer draws a few million conversations (corpus.py) in worker processes, keeps their
token ids in flat arrays, and cuts each epoch into batches of samples of similar length, padded
on the right, with the loss on the assistant reply only.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np

from llmservice.runtime.builtin.corpus import sample_conversation, training_rng

IGNORE_INDEX = -100  # label of the tokens that carry no loss (prompt, padding)


@dataclass(frozen=True, slots=True)
class EncodedCorpus:
    """Tokenized conversations, flat: sample i is tokens[starts[i] : starts[i] + lengths[i]]."""

    tokens: np.ndarray  # (total_tokens,) int32
    starts: np.ndarray  # (num_samples,) int64
    lengths: np.ndarray  # (num_samples,) int32
    prompt_lengths: np.ndarray  # (num_samples,) int32: the first tokens that carry no loss


_Shard = tuple[np.ndarray, np.ndarray, np.ndarray, frozenset[str]]


def _encode_shard(job: tuple[int, int, int, str, frozenset[str]]) -> _Shard:
    """Draws and tokenizes one shard (runs in a worker process); also returns which of
    `heldout_prompts` it drew."""
    from tokenizers import Tokenizer

    seed, shard, count, tokenizer_json, heldout_prompts = job
    tokenizer = Tokenizer.from_str(tokenizer_json)
    rng = training_rng(seed, shard)
    samples = [sample_conversation(rng) for _ in range(count)]
    seen = heldout_prompts.intersection(s.prompt for s in samples)
    prompts = tokenizer.encode_batch([s.prompt for s in samples], add_special_tokens=False)
    targets = tokenizer.encode_batch([s.target for s in samples], add_special_tokens=False)
    pieces = [
        np.asarray(p.ids + t.ids, dtype=np.int32) for p, t in zip(prompts, targets, strict=True)
    ]
    lengths = np.asarray([len(p) for p in pieces], dtype=np.int32)
    prompt_lengths = np.asarray([len(p.ids) for p in prompts], dtype=np.int32)
    return np.concatenate(pieces), lengths, prompt_lengths, seen


def build_corpus(
    seed: int, num_samples: int, workers: int, tokenizer_json: str, heldout_prompts: frozenset[str]
) -> tuple[EncodedCorpus, int]:
    """All training conversations, drawn in shards by worker processes and tokenized, and how
    many of `heldout_prompts` the training set also holds (small problems such as 2+3 are
    bound to be drawn by both)."""
    shard_size = 20_000
    jobs = [
        (
            seed,
            shard,
            min(shard_size, num_samples - first),
            tokenizer_json,
            heldout_prompts,
        )
        for shard, first in enumerate(range(0, num_samples, shard_size))
    ]
    workers = workers or os.cpu_count() or 1
    # spawn: the parent may hold CUDA or thread pools, which must not be forked.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        shards = list(pool.map(_encode_shard, jobs))
    tokens = np.concatenate([s[0] for s in shards])
    lengths = np.concatenate([s[1] for s in shards])
    prompt_lengths = np.concatenate([s[2] for s in shards])
    starts = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)])
    overlap = len(frozenset().union(*(s[3] for s in shards)))
    return EncodedCorpus(tokens, starts, lengths, prompt_lengths), overlap


def plan_batches(
    lengths: np.ndarray, indices: np.ndarray, batch_tokens: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch over `indices`: batches of samples of similar length, at most `batch_tokens`
    each counting padding, in a random order."""
    order = rng.permutation(indices)
    batches: list[np.ndarray] = []
    # Sorting within windows (not the whole epoch) keeps batches from being all-short or all-long.
    for window in np.array_split(order, max(1, len(order) // 50_000)):
        window = window[np.argsort(lengths[window], kind="stable")]
        first = 0
        while first < len(window):
            last = first + 1
            while last < len(window) and (last + 1 - first) * lengths[window[last]] <= batch_tokens:
                last += 1
            batches.append(window[first:last])
            first = last
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(corpus: EncodedCorpus, batch: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and labels (batch, width): padded on the right, the loss on the reply only."""
    width = int(corpus.lengths[batch].max())
    width = -(-width // 8) * 8  # a multiple of 8 keeps the matrix shapes friendly
    input_ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    labels = np.full((len(batch), width), IGNORE_INDEX, dtype=np.int64)
    for row, index in enumerate(batch):
        start, length = corpus.starts[index], corpus.lengths[index]
        input_ids[row, :length] = corpus.tokens[start : start + length]
        prompt = corpus.prompt_lengths[index]
        labels[row, prompt:length] = input_ids[row, prompt:length]
    return input_ids, labels
