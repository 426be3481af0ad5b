"""The tokenizer: digits one by one, reasoning tags as single visible tokens, any text encodable."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import PreTrainedTokenizerFast

from llmservice.runtime.builtin.chat_format import END, PAD, THINK_END, THINK_START
from llmservice.runtime.builtin.corpus import sample_conversation, training_rng
from llmservice.runtime.builtin.tokenizer_train import train_tokenizer


@pytest.fixture(scope="module")
def small_tokenizer() -> Any:
    """A tokenizer trained here on a small corpus, to test train_tokenizer itself."""
    rng = training_rng(0, 0)
    samples = [sample_conversation(rng) for _ in range(300)]
    tokenizer = train_tokenizer((s.prompt + s.target for s in samples), vocab_size=400)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END, pad_token=PAD)


@pytest.fixture(params=["shipped", "trained here"])
def tokenizer(request: pytest.FixtureRequest, hf_tokenizer: Any, small_tokenizer: Any) -> Any:
    return hf_tokenizer if request.param == "shipped" else small_tokenizer


def test_every_digit_is_its_own_token(tokenizer: Any) -> None:
    ids = tokenizer.encode("x 12345 * 907", add_special_tokens=False)
    digit_tokens = [t for t in tokenizer.convert_ids_to_tokens(ids) if any(c.isdigit() for c in t)]
    assert digit_tokens == list("12345907")


def test_reasoning_tags_are_single_tokens_kept_in_decoded_text(tokenizer: Any) -> None:
    text = f"{THINK_START}47*23\n= 1081{THINK_END}1081{END}"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids(THINK_START) in ids
    assert tokenizer.convert_tokens_to_ids(THINK_END) in ids
    assert ids[-1] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids(END)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.removesuffix(END)


def test_any_text_round_trips(tokenizer: Any) -> None:
    text = "Héllo ✓ 漢字 — tabs\tand\nnew lines, emoji 🙂 and <b>tags</b>"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_no_bos_is_added(hf_tokenizer: Any) -> None:
    assert hf_tokenizer.encode("hi") == hf_tokenizer.encode("hi", add_special_tokens=False)
    assert hf_tokenizer.bos_token is None
