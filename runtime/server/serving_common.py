"""What /v1/completions and /v1/chat/completions share: parsing, limits, sampling parameters.

Validation happens in the order a client can act on: the body's JSON and types, the model name,
unsupported features, then the numbers (max_tokens, n, logprobs) -- all before tokenizing --
and finally the prompt's length against the model, once it is tokenized.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from llmservice.runtime.sampling_params import MAX_LOGPROBS, SamplingParams
from llmservice.runtime.server.config import ServerConfig
from llmservice.runtime.server.errors import (
    APIError,
    invalid_request,
    model_not_found,
    not_implemented,
)
from llmservice.runtime.server.protocol import SamplingFields
from llmservice.runtime.server.reasoning import REASONING_PARSERS, ReasoningSyntax
from llmservice.runtime.server.router import RequestRouter
from llmservice.runtime.server.state import ServerState
from llmservice.runtime.tokenizer import Tokenizer

logger = logging.getLogger("llmservice.server")

BodyT = TypeVar("BodyT", bound=BaseModel)
# Texts shorter than this tokenize in well under a millisecond: not worth a thread hop.
_INLINE_TOKENIZE_CHARS = 16 * 1024
# Every stop string is searched for after every token of every sample, on the event loop: a
# million of them (8 MB of JSON) held /health for seconds. OpenAI allows 4; clients send a few.
MAX_STOP_STRINGS = 64


@dataclass(frozen=True, slots=True)
class ServingContext:
    """Everything a handler needs, built once at start-up."""

    config: ServerConfig
    """The server's settings."""
    tokenizer: Tokenizer | None
    """The model's tokenizer (None: the model has none; text prompts are refused)."""
    router: RequestRouter
    """Submits work to the engine."""
    state: ServerState
    """Admission (draining, waiting-queue limit)."""
    max_model_len: int
    """Prompt plus output tokens of one sequence at most."""
    vocab_size: int
    """Token ids must be below this."""
    scheduling_policy: str
    """"fcfs" or "priority" (priority must be 0 under fcfs)."""

    @property
    def reasoning(self) -> ReasoningSyntax | None:
        """The reasoning parser chosen with --reasoning-parser, if any."""
        name = self.config.reasoning_parser
        return None if name is None else REASONING_PARSERS[name]

    def require_tokenizer(self) -> Tokenizer:
        """The tokenizer, or 400 when the model has none."""
        if self.tokenizer is None:
            raise invalid_request("this model has no tokenizer: send prompts as token ids")
        return self.tokenizer

    async def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        """Token ids of `text` (as `encode_all`)."""
        return (await self.encode_all([text], add_special_tokens))[0]

    async def encode_all(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        """Token ids of each text; a long text or a batch is tokenized in a thread, so the
        event loop keeps streaming other requests' tokens meanwhile (a batch of a million
        short prompts took 19 s, and /health waited as long)."""
        tokenizer = self.require_tokenizer()

        def encode_each() -> list[list[int]]:
            return [tokenizer.encode(t, add_special_tokens=add_special_tokens) for t in texts]

        if len(texts) == 1 and len(texts[0]) < _INLINE_TOKENIZE_CHARS:
            return encode_each()
        return await asyncio.to_thread(encode_each)


async def parse_body(request: web.Request, model: type[BodyT], config: ServerConfig) -> BodyT:
    """The JSON body validated into `model`; 413 when too large, 400 when malformed."""
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        raise _body_too_large(config)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _body_too_large(config) from None
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise _validation_error(error) from None


def check_common(body: SamplingFields, context: ServingContext, request_id: str) -> None:
    """Model name, unsupported features, unknown fields and the request-level numbers."""
    names = context.config.served_model_names
    if body.model is not None and body.model not in names:
        raise model_not_found(body.model, names)
    for param, feature in body.unsupported_fields():
        raise not_implemented(feature, param)
    unknown = body.unknown_fields()
    if unknown:
        logger.warning("%s: ignoring unknown fields %s", request_id, ", ".join(unknown))
    if body.stream_options is not None and not body.stream:
        raise invalid_request("stream_options is only allowed with stream=true", "stream_options")
    if not 1 <= body.n <= context.config.max_n:
        raise invalid_request(f"n must be in [1, {context.config.max_n}], got {body.n}", "n")
    if body.priority != 0 and context.scheduling_policy != "priority":
        raise invalid_request(
            "priority is only honoured with --scheduling-policy priority", "priority"
        )


def check_max_tokens(max_tokens: int | None, param: str, n: int, context: ServingContext) -> None:
    """max_tokens must be positive, fit the model, and n * max_tokens stay under the cap."""
    if max_tokens is None:
        return
    if max_tokens <= 0:
        raise invalid_request(f"{param} must be at least 1, got {max_tokens}", param)
    room = context.max_model_len - 1
    if max_tokens > room:
        raise invalid_request(
            f"{param}={max_tokens} is more than this model's room for output "
            f"({room} tokens: max_model_len {context.max_model_len} minus a 1-token prompt)",
            param,
        )
    check_output_cap(n * max_tokens, f"n * {param}", param, context)


def check_output_cap(tokens: int, what: str, param: str, context: ServingContext) -> None:
    """The output tokens a whole request may ask for (`what`, e.g. n * max_tokens) stay under
    `max_sequences_per_request` full-length sequences."""
    cap = context.config.max_sequences_per_request * context.max_model_len
    if tokens > cap:
        raise invalid_request(f"{what} = {tokens} is above the limit {cap}", param)


def check_logprobs(top: int | None, param: str) -> None:
    """At most MAX_LOGPROBS top logprobs per token."""
    if top is not None and not 0 <= top <= MAX_LOGPROBS:
        raise invalid_request(f"{param} must be in [0, {MAX_LOGPROBS}], got {top}", param)


def check_prompt(
    token_ids: list[int], limit: tuple[int | None, str], param: str, context: ServingContext
) -> int:
    """The prompt (field `param`) fits with its output limit `(max_tokens, its field)`;
    returns the effective max_tokens (the room left when none was asked for)."""
    max_tokens, max_tokens_param = limit
    if not token_ids:
        raise invalid_request("the prompt is empty", param)
    check_token_ids(token_ids, "token id", param, context.vocab_size)
    model_len = context.max_model_len
    if len(token_ids) >= model_len:
        raise invalid_request(
            f"the prompt has {len(token_ids)} tokens; this model's maximum context length is "
            f"{model_len} tokens, and at least one must be left for the output",
            param,
        )
    if max_tokens is not None and len(token_ids) + max_tokens > model_len:
        raise invalid_request(
            f"this model's maximum context length is {model_len} tokens, but {len(token_ids)} "
            f"prompt tokens + {max_tokens_param} {max_tokens} is {len(token_ids) + max_tokens}",
            max_tokens_param,
        )
    return model_len - len(token_ids) if max_tokens is None else max_tokens


def check_token_ids(token_ids: Iterable[int], what: str, param: str, vocab_size: int) -> None:
    """400 naming `param` for the first id outside the vocabulary."""
    bad = next((t for t in token_ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise invalid_request(f"{what} {bad} is outside the vocabulary [0, {vocab_size})", param)


def sampling_params(
    body: SamplingFields, max_tokens: int | None, logprobs: int | None, vocab_size: int
) -> SamplingParams:
    """The engine's parameters; 400 naming the field when one is out of range."""
    if isinstance(body.stop, list) and len(body.stop) > MAX_STOP_STRINGS:
        raise invalid_request(
            f"stop holds {len(body.stop)} strings; at most {MAX_STOP_STRINGS} are allowed", "stop"
        )
    check_token_ids(body.stop_token_ids or (), "stop token id", "stop_token_ids", vocab_size)
    logit_bias = _logit_bias(body.logit_bias, vocab_size)
    try:
        return SamplingParams(
            n=body.n,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            min_p=body.min_p,
            seed=body.seed,
            max_tokens=max_tokens,
            min_tokens=body.min_tokens,
            stop=body.stop,
            stop_token_ids=body.stop_token_ids,
            ignore_eos=body.ignore_eos,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            repetition_penalty=body.repetition_penalty,
            logprobs=logprobs,
            logit_bias=logit_bias,
            include_stop_str_in_output=body.include_stop_str_in_output,
            skip_special_tokens=body.skip_special_tokens,
        )
    except ValueError as error:
        message = str(error)
        field = message.split(" ", 1)[0]
        raise invalid_request(
            message, field if field in type(body).model_fields else None
        ) from None


def _logit_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float] | None:
    """OpenAI's {"<token id>": bias} with integer keys; 400 naming logit_bias otherwise."""
    if not bias:
        return None
    result: dict[int, float] = {}
    for key, value in bias.items():
        token_id = int(key) if key.strip().isdecimal() else -1
        if not 0 <= token_id < vocab_size:
            raise invalid_request(
                f"logit_bias keys must be token ids in [0, {vocab_size}), got {key!r}",
                "logit_bias",
            )
        result[token_id] = value
    return result


def new_request_id(prefix: str) -> str:
    """A unique id such as chatcmpl-3f2a..."""
    return f"{prefix}-{uuid.uuid4().hex}"


def created() -> int:
    """The `created` field: Unix seconds."""
    return int(time.time())


def usage(
    prompt_tokens: int, completion_tokens: int, reasoning_tokens: int | None
) -> dict[str, Any]:
    """OpenAI's usage object (completion_tokens_details only when reasoning is parsed)."""
    result: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if reasoning_tokens is not None:
        result["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return result


def log_request(
    context: ServingContext,
    request_id: str,
    prompt: str | None,
    token_ids: list[int],
    params: SamplingParams,
) -> None:
    """One line per accepted request, the prompt cut to --max-log-len."""
    if not context.config.log_requests:
        return
    limit = context.config.max_log_len
    shown_prompt = prompt if prompt is None or limit is None else prompt[:limit]
    shown_ids = token_ids if limit is None else token_ids[:limit]
    logger.info(
        "%s: prompt %r, %d prompt tokens %s, params %s",
        request_id, shown_prompt, len(token_ids), shown_ids, params,
    )  # fmt: skip


def _body_too_large(config: ServerConfig) -> APIError:
    return APIError(
        413, f"the request body is larger than {config.max_body_bytes} bytes", code="body_too_large"
    )


def _validation_error(error: ValidationError) -> APIError:
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return invalid_request(f"the request body is not valid JSON: {first['msg']}")
    if first["type"] == "model_type" and not first["loc"]:
        return invalid_request("the request body must be a JSON object")
    param = _param_of(first["loc"])
    messages = [f"{_param_of(e['loc']) or 'body'}: {e['msg']}" for e in error.errors()[:3]]
    return invalid_request("; ".join(messages), param)


def _param_of(loc: tuple[int | str, ...]) -> str | None:
    """The field an error is about: `messages[0]`, `stream_options`, ..."""
    if not loc:
        return None
    param = str(loc[0])
    if len(loc) > 1 and isinstance(loc[1], int):
        param += f"[{loc[1]}]"
    return param
