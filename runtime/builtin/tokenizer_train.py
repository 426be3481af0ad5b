"""The tokenizer of the built-in model: a byte-level BPE trained on its corpus.

Every digit is its own token (digits are split off one by one before BPE sees the text), so
the model reads and writes numbers digit by digit, the unit its arithmetic works in. Being
byte-level, it encodes any text a user types, not only the corpus. The chat tags are special
tokens (dropped from decoded text); `<think>` and `</think>` are single tokens that stay in the
decoded text, where the `deepseek_r1` reasoning parser looks for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from llmservice.runtime.builtin.chat_format import (
    CHAT_TEMPLATE,
    END,
    PAD,
    REASONING_TOKENS,
    SPECIAL_TOKENS,
)

MAX_MODEL_LEN = 512
_TAGS = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS + REASONING_TOKENS))


def _between_tags(texts: Iterable[str]) -> Iterator[str]:
    """The text between the tags: the tags are single tokens, so BPE must not learn them."""
    for text in texts:
        yield from (piece for piece in _TAGS.split(text) if piece)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE of at most `vocab_size` tokens learnt from `texts` (rendered samples)."""
    tokenizer = Tokenizer(models.BPE())
    # Without GPT-2's word-splitting regex, BPE may also merge the punctuation and spaces of
    # the working (" → ", ", ") into single tokens, which keeps generations short.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(  # type: ignore[no-untyped-call]
        vocab_size=vocab_size - len(REASONING_TOKENS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_between_tags(texts), trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, out_dir: Path) -> None:
    """Writes `tokenizer.json` and a `tokenizer_config.json` that carries the chat template."""
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": END,
        "pad_token": PAD,
        "unk_token": None,
        "model_max_length": MAX_MODEL_LEN,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
