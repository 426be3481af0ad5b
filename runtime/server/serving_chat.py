"""POST /v1/chat/completions: the chat template, reasoning split, OpenAI's chat shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web

from llmservice.runtime.server.errors import invalid_request
from llmservice.runtime.server.generation import PromptInput
from llmservice.runtime.server.logprobs import chat_logprobs
from llmservice.runtime.server.protocol import ChatCompletionRequest, ChatMessage
from llmservice.runtime.server.reasoning import ReasoningParser
from llmservice.runtime.server.responder import respond
from llmservice.runtime.server.serving_common import (
    ServingContext,
    check_common,
    check_logprobs,
    check_max_tokens,
    check_prompt,
    created,
    log_request,
    new_request_id,
    parse_body,
    sampling_params,
    usage,
)
from llmservice.runtime.server.sse import client_gone

if TYPE_CHECKING:  # it imports torch: loaded only once the engine core is starting
    from llmservice.runtime.output_processor import CompletionDelta

# Arguments of apply_chat_template that chat_template_kwargs must not override.
_RESERVED_TEMPLATE_KWARGS = frozenset(
    {"messages", "conversation", "tokenize", "add_generation_prompt", "chat_template"}
)


async def create_chat_completion(
    request: web.Request, context: ServingContext
) -> web.StreamResponse:
    """Validate, render, tokenize, submit, answer."""
    body = await parse_body(request, ChatCompletionRequest, context.config)
    request_id = new_request_id("chatcmpl")
    check_common(body, context, request_id)
    limit = body.requested_max_tokens()
    max_tokens, param = limit
    check_max_tokens(max_tokens, param, body.n, context)
    if body.top_logprobs is not None and not body.logprobs:
        raise invalid_request("top_logprobs needs logprobs=true", "top_logprobs")
    check_logprobs(body.top_logprobs, "top_logprobs")
    prompt_text = render_chat(
        context, body.messages, body.add_generation_prompt, body.chat_template_kwargs
    )
    token_ids = await context.encode(prompt_text, add_special_tokens=False)
    room = check_prompt(token_ids, limit, "messages", context)
    if max_tokens is None:  # the default fills the model's room: n times that must fit too
        check_max_tokens(room, param, body.n, context)
    params = sampling_params(
        body, room, (body.top_logprobs or 0) if body.logprobs else None, context.vocab_size
    )
    context.state.admit(body.n)
    log_request(context, request_id, prompt_text, token_ids, params)
    prompt = PromptInput(token_ids, prompt_text)
    generation = context.router.submit(
        request_id, [prompt], params, body.priority, lambda: client_gone(request)
    )
    model = body.model or context.config.served_model_names[0]
    builder = _ChatBuilder(request_id, model, body, prompt, context)
    return await respond(request, generation, builder, body.stream, body.stream_options)


def render_chat(
    context: ServingContext,
    messages: list[ChatMessage],
    add_generation_prompt: bool,
    template_kwargs: dict[str, Any] | None,
) -> str:
    """The conversation rendered by --chat-template, else by the model's own chat template;
    400 when it cannot be."""
    kwargs = dict(template_kwargs or {})
    reserved = sorted(_RESERVED_TEMPLATE_KWARGS & kwargs.keys())
    if reserved:
        raise invalid_request(
            f"chat_template_kwargs must not set {', '.join(reserved)}", "chat_template_kwargs"
        )
    tokenizer = context.require_tokenizer()
    template = context.config.chat_template
    if template is None and not tokenizer.has_chat_template:
        raise invalid_request(
            "this model has no chat template: start the server with --chat-template, "
            "or send the prompt to /v1/completions",
            "messages",
        )
    try:
        return tokenizer.apply_chat_template(
            [_message_dict(m) for m in messages], add_generation_prompt, template, **kwargs
        )
    except (ValueError, TypeError, jinja2.TemplateError) as error:  # the conversation's fault
        raise invalid_request(f"the chat template failed: {error}", "messages") from None


def _message_dict(message: ChatMessage) -> dict[str, Any]:
    """What the chat template sees of a message (text parts joined by newlines)."""
    content = message.content
    if isinstance(content, list):
        content = "\n".join(part.text or "" for part in content)
    result: dict[str, Any] = {"role": message.role, "content": content or ""}
    if message.name is not None:
        result["name"] = message.name
    if message.reasoning_content is not None:
        result["reasoning_content"] = message.reasoning_content
    return result


class _ChatBuilder:
    """Chunks and body of a chat request, with the reasoning split per choice."""

    def __init__(
        self,
        request_id: str,
        model: str,
        body: ChatCompletionRequest,
        prompt: PromptInput,
        context: ServingContext,
    ) -> None:
        self._id = request_id
        self._model = model
        self._created = created()
        self._prompt_tokens = len(prompt.token_ids)
        self._top_logprobs = (body.top_logprobs or 0) if body.logprobs else None
        syntax = context.reasoning
        self._parsers: list[ReasoningParser] | None = None
        if syntax is not None:
            self._parsers = [syntax.new_parser(prompt.text or "") for _ in range(body.n)]
        self._texts: list[list[str]] = [[] for _ in range(body.n)]
        self._tokens = [0] * body.n
        self._logprobs: list[list[dict[str, Any]]] = [[] for _ in range(body.n)]
        self._finish: list[tuple[str | None, int | str | None]] = [(None, None)] * body.n

    def opening(self) -> list[dict[str, Any]]:
        return [
            {
                "index": index,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            for index in range(len(self._texts))
        ]

    def on_delta(self, index: int, delta: CompletionDelta) -> dict[str, Any] | None:
        self._tokens[index] += len(delta.token_ids)
        message: dict[str, Any] = {}
        if self._parsers is None:
            self._texts[index].append(delta.text)
            if delta.text:
                message["content"] = delta.text
        else:
            parser = self._parsers[index]
            split = parser.feed(delta.text, len(delta.token_ids))
            reasoning, content = split.reasoning, split.content
            if delta.finish_reason is not None:
                tail = parser.finish()
                reasoning, content = reasoning + tail.reasoning, content + tail.content
            if reasoning:
                message["reasoning_content"] = reasoning
            if content:
                message["content"] = content
        logprobs = None
        if self._top_logprobs is not None and delta.logprobs is not None:
            entries = chat_logprobs(delta.token_ids, delta.logprobs, self._top_logprobs)
            self._logprobs[index].extend(entries)
            logprobs = {"content": entries}
            message.setdefault("content", "")
        if delta.finish_reason is not None:
            self._finish[index] = (delta.finish_reason, delta.stop_reason)
        elif not message:
            return None
        return {
            "index": index,
            "delta": message,
            "logprobs": logprobs,
            "finish_reason": delta.finish_reason,
            "stop_reason": delta.stop_reason,
        }

    def usage(self) -> dict[str, Any]:
        reasoning_tokens = None
        if self._parsers is not None:
            reasoning_tokens = sum(
                parser.result(finish_reason).reasoning_tokens
                for parser, (finish_reason, _) in zip(self._parsers, self._finish, strict=True)
            )
        return usage(self._prompt_tokens, sum(self._tokens), reasoning_tokens)

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return self._envelope("chat.completion.chunk", choices)

    def response(self) -> dict[str, Any]:
        choices = []
        for index, (finish_reason, stop_reason) in enumerate(self._finish):
            message: dict[str, Any] = {"role": "assistant"}
            if self._parsers is None:
                message["content"] = "".join(self._texts[index])
            else:
                result = self._parsers[index].result(finish_reason)
                message["content"] = result.content
                message["reasoning_content"] = result.reasoning
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": (
                        {"content": self._logprobs[index]}
                        if self._top_logprobs is not None
                        else None
                    ),
                    "finish_reason": finish_reason,
                    "stop_reason": stop_reason,
                }
            )
        body = self._envelope("chat.completion", choices)
        body["usage"] = self.usage()
        return body

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": kind,
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
