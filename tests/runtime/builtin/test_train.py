"""The trainer: its batches, its schedule, and one tiny run of the whole command on the CPU."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmservice.runtime.builtin.dataset import (
    IGNORE_INDEX,
    EncodedCorpus,
    collate,
    plan_batches,
)
from llmservice.runtime.builtin.train import TrainConfig, learning_rate


def _corpus(lengths: list[int], prompt_lengths: list[int]) -> EncodedCorpus:
    lengths_array = np.asarray(lengths, dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths_array[:-1], dtype=np.int64)])
    tokens = np.arange(10, 10 + lengths_array.sum(), dtype=np.int32)
    return EncodedCorpus(tokens, starts, lengths_array, np.asarray(prompt_lengths, dtype=np.int32))


def test_an_epoch_takes_every_sample_once_within_the_token_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 300, size=5000).astype(np.int32)
    indices = np.arange(0, 5000, 2)  # only the even ones are usable
    batches = plan_batches(lengths, indices, 4096, np.random.default_rng(1))
    taken = np.concatenate(batches)
    assert sorted(taken.tolist()) == indices.tolist()
    assert all(len(b) * lengths[b].max() <= 4096 for b in batches)
    # similar lengths travel together, so padding stays small
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    assert padded < 1.1 * lengths[indices].sum()
    again = plan_batches(lengths, indices, 4096, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_collate_pads_right_and_puts_the_loss_on_the_reply_only() -> None:
    corpus = _corpus([5, 3], [2, 1])
    input_ids, labels = collate(corpus, np.asarray([0, 1]), pad_id=0)
    assert input_ids.shape == (2, 8)  # widened to a multiple of 8
    assert input_ids[0].tolist() == [10, 11, 12, 13, 14, 0, 0, 0]
    assert input_ids[1].tolist() == [15, 16, 17, 0, 0, 0, 0, 0]
    ignored = IGNORE_INDEX
    assert labels[0].tolist() == [ignored, ignored, 12, 13, 14, ignored, ignored, ignored]
    assert labels[1].tolist() == [ignored, 16, 17] + [ignored] * 5


def test_the_learning_rate_warms_up_then_decays_to_its_floor() -> None:
    config = TrainConfig(steps=1000, warmup_steps=100, lr=1e-3, min_lr_ratio=0.1)
    rates = [learning_rate(config, step) for step in range(config.steps)]
    assert rates[0] == pytest.approx(1e-5)
    assert max(rates) == pytest.approx(1e-3)
    assert rates.index(max(rates)) == 99
    assert all(a >= b for a, b in itertools.pairwise(rates[100:]))
    assert rates[-1] == pytest.approx(1e-4, rel=1e-3)


@pytest.mark.slow
def test_one_command_writes_a_checkpoint_transformers_loads(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "model"
    tiny = "--hidden-size 32 --num-layers 1 --num-heads 2 --num-kv-heads 1 --intermediate-size 64"
    command = [sys.executable, "-m", "llmservice.runtime.builtin.train", "--out", str(out)]
    command += ["--device", "cpu", "--num-samples", "400", "--tokenizer-samples", "400"]
    command += ["--vocab-size", "400", "--steps", "3", "--warmup-steps", "1"]
    command += ["--batch-tokens", "2048", "--workers", "1", "--eval-problems", "2", *tiny.split()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out accuracy (transformers generate, greedy): " in result.stdout
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["config"]["steps"] == 3
    assert np.isfinite(summary["final_loss"])
    assert summary["heldout_problems"] == 2
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer) <= 400
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.chat_template is not None
