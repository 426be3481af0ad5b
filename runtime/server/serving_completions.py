"""POST /v1/completions: text or token-id prompts (one or a batch), n samples each."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from llmservice.runtime.server.generation import PromptInput
from llmservice.runtime.server.logprobs import CompletionLogprobs, merge_completion_logprobs
from llmservice.runtime.server.protocol import CompletionRequest
from llmservice.runtime.server.responder import respond
from llmservice.runtime.server.serving_common import (
    ServingContext,
    check_common,
    check_logprobs,
    check_max_tokens,
    check_output_cap,
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
    from llmservice.runtime.outputs import Logprob
    from llmservice.runtime.tokenizer import Tokenizer


async def create_completion(request: web.Request, context: ServingContext) -> web.StreamResponse:
    """Validate, tokenize, submit, answer."""
    body = await parse_body(request, CompletionRequest, context.config)
    request_id = new_request_id("cmpl")
    check_common(body, context, request_id)
    limit = body.requested_max_tokens()
    max_tokens = limit[0]
    check_max_tokens(max_tokens, limit[1], body.n, context)
    check_logprobs(body.logprobs, "logprobs")
    prompts = await _tokenize(body.prompt, context)
    rooms = [check_prompt(prompt.token_ids, limit, "prompt", context) for prompt in prompts]
    # Each prompt of a batch gets n samples, and a null max_tokens means each prompt's room:
    # the cap checked above for one prompt holds for the request as a whole.
    what = f"n * {limit[1]} summed over {len(prompts)} prompt(s)"
    if max_tokens is None:
        what += f" ({limit[1]} null: the room each prompt leaves)"
    check_output_cap(body.n * sum(rooms), what, limit[1], context)
    if body.echo:  # echoed token-id prompts need their text
        tokenizer = context.require_tokenizer()
        prompts = [
            p if p.text is not None else PromptInput(p.token_ids, tokenizer.decode(p.token_ids))
            for p in prompts
        ]
    params = sampling_params(body, max_tokens, body.logprobs, context.vocab_size)
    if body.echo and body.logprobs is not None:  # the echoed prompt carries its logprobs
        params = dataclasses.replace(params, prompt_logprobs=body.logprobs)
    context.state.admit(len(prompts) * body.n)
    for prompt in prompts:
        log_request(context, request_id, prompt.text, prompt.token_ids, params)
    generation = context.router.submit(
        request_id, prompts, params, body.priority, lambda: client_gone(request)
    )
    model = body.model or context.config.served_model_names[0]
    builder = _CompletionBuilder(request_id, model, body, prompts, context.tokenizer)
    return await respond(request, generation, builder, body.stream, body.stream_options)


async def _tokenize(
    prompt: str | list[str] | list[int] | list[list[int]], context: ServingContext
) -> list[PromptInput]:
    """The prompts of the request: a string, a batch of strings, token ids or a batch of them."""
    items: list[str | list[int]]
    if isinstance(prompt, str):
        items = [prompt]
    elif not prompt or isinstance(prompt[0], int):
        items = [cast("list[int]", prompt)]  # one token-id prompt (or an empty one)
    else:
        items = list(prompt)
    texts = [item for item in items if isinstance(item, str)]
    # Token-id prompts need no tokenizer (the model may have none).
    encoded = iter(await context.encode_all(texts, add_special_tokens=True) if texts else [])
    return [
        PromptInput(next(encoded), item) if isinstance(item, str) else PromptInput(list(item))
        for item in items
    ]


class _CompletionBuilder:
    """Chunks and body of a completions request."""

    def __init__(
        self,
        request_id: str,
        model: str,
        body: CompletionRequest,
        prompts: list[PromptInput],
        tokenizer: Tokenizer | None,
    ) -> None:
        self._id = request_id
        self._model = model
        self._tokenizer = tokenizer
        self._created = created()
        self._echo = body.echo
        self._prompts = prompts
        self._n = body.n
        num_choices = len(prompts) * body.n
        self._texts: list[list[str]] = [[] for _ in range(num_choices)]
        self._tokens = [0] * num_choices
        self._finish: list[tuple[str | None, int | str | None]] = [(None, None)] * num_choices
        self._logprobs: list[CompletionLogprobs] | None = None
        self._logprob_parts: list[list[dict[str, Any]]] = [[] for _ in range(num_choices)]
        if body.logprobs is not None:
            self._logprobs = [CompletionLogprobs(body.logprobs) for _ in range(num_choices)]
        # echo + logprobs: the prompt is echoed with its logprobs, which come with the first
        # token of each prompt's first sample; until then its choices wait.
        self._echo_logprobs = body.echo and body.logprobs is not None
        self._prompt_logprobs: dict[int, list[dict[int, Logprob] | None]] = {}
        self._opened = [not self._echo_logprobs] * num_choices

    def opening(self) -> list[dict[str, Any]]:
        if not self._echo or self._echo_logprobs:
            return []
        return [
            self._record(index, self._prompt_text(index), None, None, None)
            for index in range(len(self._texts))
        ]

    def on_delta(self, index: int, delta: CompletionDelta) -> dict[str, Any] | None:
        self._tokens[index] += len(delta.token_ids)
        prompt_index = index // self._n
        if delta.prompt_logprobs is not None:
            self._prompt_logprobs[prompt_index] = delta.prompt_logprobs
        echoed_text, echoed = "", None
        opens = not self._opened[index] and self._logprobs is not None
        if opens:
            self._opened[index] = True
            echoed_text = self._prompt_text(index)
            prompt = self._prompts[prompt_index]
            prompt_logprobs = self._prompt_logprobs.get(prompt_index)
            # None only when the choice ended (abort, engine failure) before any token.
            if prompt_logprobs is not None and self._logprobs is not None:
                echoed = self._logprobs[index].add_prompt(
                    prompt.token_ids, prompt_logprobs, self._token_text(prompt.token_ids[0])
                )
                self._logprob_parts[index].append(echoed)
        logprobs = None
        if self._logprobs is not None and delta.logprobs is not None:
            logprobs = self._logprobs[index].add(delta.token_ids, delta.logprobs)
            self._logprob_parts[index].append(logprobs)
        if opens:
            parts = [part for part in (echoed, logprobs) if part is not None]
            return self._record(
                index,
                echoed_text + delta.text,
                merge_completion_logprobs(parts),
                delta.finish_reason,
                delta.stop_reason,
            )
        # NOTE: a chunk per new token even when it adds no text (half a UTF-8 character, a model
        # without a tokenizer), as vLLM does: clients time tokens by chunks.
        if not delta.text and not delta.token_ids and delta.finish_reason is None:
            return None
        return self._record(index, delta.text, logprobs, delta.finish_reason, delta.stop_reason)

    def usage(self) -> dict[str, Any]:
        prompt_tokens = sum(len(p.token_ids) for p in self._prompts)
        return usage(prompt_tokens, sum(self._tokens), None)

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return self._envelope(choices)

    def response(self) -> dict[str, Any]:
        choices = []
        for index, texts in enumerate(self._texts):
            finish_reason, stop_reason = self._finish[index]
            choices.append(
                {
                    "index": index,
                    "text": "".join(texts),
                    "logprobs": merge_completion_logprobs(self._logprob_parts[index]),
                    "finish_reason": finish_reason,
                    "stop_reason": stop_reason,
                }
            )
        body = self._envelope(choices)
        body["usage"] = self.usage()
        return body

    def _record(
        self,
        index: int,
        text: str,
        logprobs: dict[str, Any] | None,
        finish_reason: str | None,
        stop_reason: int | str | None,
    ) -> dict[str, Any]:
        self._texts[index].append(text)
        if finish_reason is not None:
            self._finish[index] = (finish_reason, stop_reason)
        return {
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish_reason,
            "stop_reason": stop_reason,
        }

    def _token_text(self, token_id: int) -> str:
        if self._tokenizer is None:
            return f"token_id:{token_id}"  # vLLM's form without a tokenizer
        return self._tokenizer.decode([token_id], skip_special_tokens=False)

    def _prompt_text(self, index: int) -> str:
        return self._prompts[index // self._n].text or ""

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "text_completion",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
