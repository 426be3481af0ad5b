"""Reasoning parsers: split a chat answer into `reasoning_content` and `content`.

One incremental state machine serves streaming and non-streaming alike (non-streaming feeds the
whole text at once), so both always agree. It holds back only text that may be the beginning of
a tag (`<th` may become `<think>`); everything else is emitted as soon as it arrives.

    EXPECT_OPEN --"<think>"--> REASONING --"</think>"--> CONTENT
         \\--anything else--> fallback (REASONING or CONTENT)

The start state comes from the rendered prompt: a template that opens `<think>` itself makes the
output reasoning from its first token (a repeated `<think>` from the model is still stripped).
A parser's default applies when the prompt has no tag: `deepseek_r1` (R1 always reasons) starts in
reasoning, `qwen3` starts in content unless the output opens `<think>`.

If generation stops without `</think>`, the text is the answer (`content`): only a `length`
finish leaves it as reasoning, because then the model was cut off while thinking. A stream has
already sent those deltas as `reasoning_content` by then; the rule applies to the final message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class _State(enum.Enum):
    EXPECT_OPEN = "expect_open"
    REASONING = "reasoning"
    CONTENT = "content"


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """What one piece of generated text adds to each channel."""

    reasoning: str = ""
    """Text that goes to `reasoning_content`."""
    content: str = ""
    """Text that goes to `content`."""


@dataclass(frozen=True, slots=True)
class ReasoningResult:
    """The whole answer of one choice, split (None where a channel is empty)."""

    reasoning: str | None
    """`reasoning_content` of the message."""
    content: str | None
    """`content` of the message."""
    reasoning_tokens: int
    """Output tokens spent reasoning (`completion_tokens_details.reasoning_tokens`)."""


@dataclass(frozen=True, slots=True)
class ReasoningSyntax:
    """How one model family marks its reasoning."""

    name: str
    """The `--reasoning-parser` value."""
    open_tag: str = "<think>"
    """Opens the reasoning."""
    close_tag: str = "</think>"
    """Ends the reasoning; what follows is the answer."""
    reasons_by_default: bool = False
    """Whether output is reasoning when the prompt says nothing and the output opens no tag."""

    def new_parser(self, prompt_text: str) -> ReasoningParser:
        """A parser for one choice of a request whose rendered prompt is `prompt_text`."""
        opened = prompt_text.rfind(self.open_tag)
        closed = prompt_text.rfind(self.close_tag)
        if opened > closed:  # the template opened the reasoning block itself
            fallback = _State.REASONING
        elif closed > opened:  # the template closed it (thinking switched off)
            fallback = _State.CONTENT
        else:
            fallback = _State.REASONING if self.reasons_by_default else _State.CONTENT
        return ReasoningParser(self, fallback)


REASONING_PARSERS: dict[str, ReasoningSyntax] = {
    syntax.name: syntax
    for syntax in (
        ReasoningSyntax("deepseek_r1", reasons_by_default=True),
        ReasoningSyntax("qwen3", reasons_by_default=False),
    )
}


class ReasoningParser:
    """The incremental splitter of one choice; feed it text deltas in order, then `finish`."""

    def __init__(self, syntax: ReasoningSyntax, fallback: _State) -> None:
        self._open = syntax.open_tag
        self._close = syntax.close_tag
        self._fallback = fallback
        self._state = _State.EXPECT_OPEN
        self._pending = ""  # held back: may be the beginning of a tag
        self._undecided_tokens = 0  # fed while EXPECT_OPEN: reasoning only if it opens
        self._reasoning: list[str] = []
        self._content: list[str] = []
        self.reasoning_tokens = 0

    def feed(self, text: str, num_tokens: int = 1) -> ReasoningDelta:
        """Split the next `text` (made of `num_tokens` output tokens)."""
        reasoning, content, touched_reasoning = self._split(self._pending + text)
        if self._state is _State.EXPECT_OPEN:
            self._undecided_tokens += num_tokens
        else:
            if touched_reasoning:
                self.reasoning_tokens += self._undecided_tokens + num_tokens
            self._undecided_tokens = 0
        return self._emit(reasoning, content)

    def finish(self) -> ReasoningDelta:
        """Release the held-back text: the output ended, so it is no tag."""
        pending, self._pending = self._pending, ""
        if self._state is _State.EXPECT_OPEN:
            self._state = self._fallback
            if self._fallback is _State.REASONING:
                self.reasoning_tokens += self._undecided_tokens
            self._undecided_tokens = 0
        if self._state is _State.REASONING:
            return self._emit(pending, "")
        return self._emit("", pending)

    def result(self, finish_reason: str | None) -> ReasoningResult:
        """The answer so far (`finish_reason` None) or, after `finish`, the whole answer with
        the rule for an unclosed reasoning block."""
        reasoning = "".join(self._reasoning)
        content = "".join(self._content)
        if self._state is _State.REASONING and finish_reason not in (None, "length"):
            # stopped without </think>: what it wrote is its answer
            return ReasoningResult(None, reasoning + content or None, 0)
        return ReasoningResult(reasoning or None, content or None, self.reasoning_tokens)

    def _split(self, text: str) -> tuple[str, str, bool]:
        """(reasoning, content, whether any of it was inside the reasoning block)."""
        reasoning = ""
        touched = self._state is _State.REASONING
        self._pending = ""
        while True:
            if self._state is _State.EXPECT_OPEN:
                if text.startswith(self._open):
                    text = text[len(self._open) :]
                    self._state = _State.REASONING
                    touched = True
                elif self._open.startswith(text):  # still maybe the tag (or empty)
                    self._pending = text
                    return reasoning, "", touched
                else:
                    self._state = self._fallback
                    touched = touched or self._fallback is _State.REASONING
            elif self._state is _State.REASONING:
                end = text.find(self._close)
                if end < 0:
                    keep = _partial_tag_length(text, self._close)
                    self._pending = text[len(text) - keep :]
                    return reasoning + text[: len(text) - keep], "", touched
                reasoning += text[:end]
                text = text[end + len(self._close) :]
                self._state = _State.CONTENT
            else:
                return reasoning, text, touched

    def _emit(self, reasoning: str, content: str) -> ReasoningDelta:
        if reasoning:
            self._reasoning.append(reasoning)
        if content:
            self._content.append(content)
        return ReasoningDelta(reasoning, content)


def _partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0
