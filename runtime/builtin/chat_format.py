"""The chat format of the built-in model: its special tokens and its chat template.

One place defines how a conversation becomes text, twice over: as the Jinja chat template that
ships in `tokenizer_config.json` (what `apply_chat_template` and the server use) and as
`render_prompt`, the same rendering in Python that the trainer uses to build millions of
samples fast. A test keeps the two identical.

A rendered conversation reads `<|system|>…<|end|><|user|>…<|end|><|assistant|>…<|end|>`, and the
model's answer is `<think>working</think>answer<|end|>` (the DeepSeek-R1 style). Earlier
assistant turns are rendered without their reasoning, as DeepSeek-R1's template does, because a
client sends back only the `content` of a reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PAD = "<|pad|>"
END = "<|end|>"  # ends every turn; the model's EOS
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
THINK_START = "<think>"
THINK_END = "</think>"

# Control tokens, dropped when decoding with skip_special_tokens.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, END, SYSTEM, USER, ASSISTANT)
# Single tokens that stay in the decoded text, so a reasoning parser can split on them.
REASONING_TOKENS: tuple[str, ...] = (THINK_START, THINK_END)

_ROLE_TAGS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}

# Whitespace control (`{%-`, `-%}`) keeps the template's own line breaks out of the prompt.
CHAT_TEMPLATE = """\
{%- for message in messages -%}
  {%- if message['content'] is string -%}{%- set content = message['content'] -%}
  {%- elif message['content'] is none -%}{%- set content = '' -%}
  {%- else -%}{%- set content = message['content'] | map(attribute='text') | join('') -%}
  {%- endif -%}
  {%- if message['role'] == 'system' -%}<|system|>{{ content }}<|end|>
  {%- elif message['role'] == 'user' -%}<|user|>{{ content }}<|end|>
  {%- elif message['role'] == 'assistant' -%}<|assistant|>{{ content.split('</think>')[-1] }}<|end|>
  {%- else -%}{{ raise_exception('tiny-reasoner knows the roles system, user and assistant, not ' + message['role']) }}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"""


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation."""

    role: str
    """"system", "user" or "assistant"."""
    content: str
    """The text of the turn (for an assistant turn, possibly with its `<think>` part)."""


def render_prompt(messages: Sequence[Message]) -> str:
    """Renders `messages` plus the generation prompt exactly as `CHAT_TEMPLATE` does."""
    parts: list[str] = []
    for message in messages:
        tag = _ROLE_TAGS.get(message.role)
        if tag is None:
            raise ValueError(
                f"tiny-reasoner knows the roles system, user and assistant, not {message.role!r}"
            )
        content = message.content
        if message.role == "assistant":
            content = content.split(THINK_END)[-1]
        parts.append(f"{tag}{content}{END}")
    parts.append(ASSISTANT)
    return "".join(parts)


def assistant_target(reasoning: str, answer: str) -> str:
    """The text the model generates after the generation prompt, its EOS included."""
    return f"{THINK_START}{reasoning}{THINK_END}{answer}{END}"


def split_answer(generated: str) -> str:
    """The final answer of a generated reply: the text after `</think>`, trimmed."""
    return generated.split(THINK_END)[-1].replace(END, "").strip()
