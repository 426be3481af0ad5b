"""Incremental detokenization: split multi-byte characters, leading spaces, special tokens."""

from __future__ import annotations

from llmservice.runtime.detokenizer import IncrementalDetokenizer
from llmservice.runtime.tokenizer import Tokenizer


def _stream(
    tokenizer: Tokenizer, prompt: list[int], output: list[int], skip: bool = True
) -> list[str]:
    detokenizer = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens=skip)
    return [detokenizer.add_tokens([token]) for token in output]


def test_multibyte_characters_split_across_tokens(tokenizer: Tokenizer) -> None:
    text = "héllo 日本 🙂 wörld"
    ids = tokenizer.encode(text, add_special_tokens=False)
    # The test means something only if some character really is split across tokens.
    assert any("\ufffd" in tokenizer.decode([token]) for token in ids)
    deltas = _stream(tokenizer, tokenizer.encode("say: ", add_special_tokens=False), ids)
    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)
    # A 4-byte emoji arrives whole, in the step of its last byte.
    assert "🙂" in deltas


def test_leading_space_after_the_prompt(tokenizer: Tokenizer) -> None:
    prompt = tokenizer.encode("hello", add_special_tokens=False)
    output = tokenizer.encode(" world", add_special_tokens=False)
    assert "".join(_stream(tokenizer, prompt, output)) == " world"


def test_special_tokens_are_skipped_unless_asked(tokenizer: Tokenizer) -> None:
    ids = [*tokenizer.encode("hello", add_special_tokens=False), 2]  # 2 is </s>
    assert "".join(_stream(tokenizer, [1], ids)) == "hello"
    assert "".join(_stream(tokenizer, [1], ids, skip=False)) == "hello</s>"


def test_bytes_that_never_form_a_character_come_out_at_the_end(tokenizer: Tokenizer) -> None:
    lone_continuation_bytes = [
        t
        for t in range(3, 300)
        if tokenizer.decode([t]) == "\ufffd" and tokenizer.decode([t, t]) == "\ufffd\ufffd"
    ][:3]
    assert len(lone_continuation_bytes) == 3
    detokenizer = IncrementalDetokenizer(tokenizer, [1], skip_special_tokens=True)
    held = [detokenizer.add_tokens([t]) for t in lone_continuation_bytes]
    assert held == ["", "", ""]  # each could still be the start of a character's tail
    assert detokenizer.flush() == tokenizer.decode(lone_continuation_bytes)
    assert detokenizer.add_tokens(tokenizer.encode("ok", add_special_tokens=False)) == "ok"
