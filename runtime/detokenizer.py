"""Incremental detokenization: the text of a growing token sequence, one delta per step.

Decoding token by token is wrong in two ways: a multi-byte UTF-8 character may be split across
byte-level BPE tokens (each half decodes to U+FFFD), and SentencePiece-style tokenizers decide
leading spaces from the preceding token. So each step decodes a short window twice, with and
without the new tokens, and emits the difference; text ending in U+FFFD is held back until the
character completes (or, for bytes that never form one, until the sequence ends: `flush`).
The window starts a few tokens before the output (prompt context).
"""

from __future__ import annotations

from collections.abc import Sequence

from llmservice.runtime.tokenizer import Tokenizer

# Prompt tokens kept as context for the first output tokens (as vLLM).
_PROMPT_CONTEXT_TOKENS = 5
_REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turns the tokens of one sequence into text deltas."""

    def __init__(
        self, tokenizer: Tokenizer, prompt_token_ids: Sequence[int], skip_special_tokens: bool
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        # Window of token ids still needed: [prefix_offset, end). Tokens before read_offset
        # have been emitted as text; those after are pending.
        self._token_ids = list(prompt_token_ids[-_PROMPT_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._token_ids)

    def add_tokens(self, token_ids: Sequence[int]) -> str:
        """Append tokens; return the text they complete ("" while a character is split)."""
        self._token_ids.extend(token_ids)
        prefix_text = self._decode(self._token_ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._token_ids[self._prefix_offset :])
        if len(full_text) <= len(prefix_text) or full_text.endswith(_REPLACEMENT_CHAR):
            return ""
        # Drop what no later decode needs, so the window stays a few tokens long.
        self._token_ids = self._token_ids[self._read_offset :]
        self._prefix_offset = 0
        self._read_offset = len(self._token_ids)
        return full_text[len(prefix_text) :]

    def flush(self) -> str:
        """The text still held back (the sequence ended): invalid bytes stay as U+FFFD."""
        prefix_text = self._decode(self._token_ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._token_ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._token_ids)
        return full_text[len(prefix_text) :]

    def _decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=self._skip_special_tokens)
