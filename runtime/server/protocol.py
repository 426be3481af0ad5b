"""Request bodies of the OpenAI-compatible API (pydantic, used only at this edge).

Field names and defaults follow OpenAI's API and vLLM's extensions. Types are strict (a string
is not a number, `true` is not an integer). Unknown fields are kept in `model_extra` and the
handler logs a warning and ignores them, as vLLM does. Fields of OpenAI features this server
does not implement (tools, response_format, ...) are declared so that a request using them gets
a clear 400 instead of being silently ignored (`unsupported_fields`).

Responses are plain dicts built by the serving modules: they are only ever serialized.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    def unknown_fields(self) -> list[str]:
        """Fields the client sent that this API does not know (ignored with a warning)."""
        return sorted(self.model_extra or {})


class StreamOptions(_Body):
    include_usage: bool | None = None
    """Send one final chunk with `choices: []` and the usage of the whole request."""
    continuous_usage_stats: bool | None = None
    """Attach the usage so far to every chunk (vLLM extension)."""


class SamplingFields(_Body):
    """The fields shared by /v1/completions and /v1/chat/completions."""

    model: str | None = None
    n: int = 1
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None
    # vLLM extensions
    priority: int = 0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    min_tokens: int = 0
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    logit_bias: dict[str, float] | None = None
    # OpenAI features not implemented: a request that sets them gets a 400
    response_format: dict[str, Any] | None = None

    def requested_max_tokens(self) -> tuple[int | None, str]:
        """The output limit asked for, and the field it came from (OpenAI's newer
        `max_completion_tokens` wins over `max_tokens`)."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"

    def unsupported_fields(self) -> list[tuple[str, str]]:
        """(field, feature) for every unimplemented feature this request asks for."""
        found: list[tuple[str, str]] = []
        if self.response_format is not None and self.response_format.get("type") != "text":
            found.append(("response_format", "response_format (structured output)"))
        return found


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = 16
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def unsupported_fields(self) -> list[tuple[str, str]]:
        found = super().unsupported_fields()
        if self.suffix:
            found.append(("suffix", "suffix (insertion)"))
        if self.best_of is not None and self.best_of != self.n:
            found.append(("best_of", "best_of"))
        return found


class TextPart(_Body):
    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = None
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None

    def unsupported_fields(self) -> list[tuple[str, str]]:
        found = super().unsupported_fields()
        if self.tools:
            found.append(("tools", "tool calling"))
        if self.tool_choice not in (None, "none"):
            found.append(("tool_choice", "tool calling"))
        if self.functions or self.function_call not in (None, "none"):
            found.append(("functions", "function calling"))
        for i, message in enumerate(self.messages):
            if message.tool_calls or message.role == "tool":
                found.append((f"messages[{i}]", "tool calling"))
            if isinstance(message.content, list):
                for part in message.content:
                    if part.type != "text" or part.text is None:
                        found.append((f"messages[{i}].content", f"content of type {part.type!r}"))
        return found


class TokenizeRequest(_Body):
    """POST /tokenize: either a prompt or chat messages (vLLM's shape)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False


class DetokenizeRequest(_Body):
    """POST /detokenize."""

    model: str | None = None
    tokens: list[int]
