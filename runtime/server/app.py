"""The aiohttp application: routes, middlewares and the thin handlers of the small endpoints.

Middlewares, outermost first: errors (every failure becomes the envelope), authentication,
then admission (503 while draining). /v1/completions and /v1/chat/completions live in their
serving modules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from llmservice import __version__
from llmservice.runtime.server.auth import EXEMPT_PATHS, check_api_key
from llmservice.runtime.server.core_client import EngineDeadError
from llmservice.runtime.server.errors import APIError, invalid_request, model_not_found, overloaded
from llmservice.runtime.server.metrics import ServerMetrics
from llmservice.runtime.server.protocol import DetokenizeRequest, TokenizeRequest
from llmservice.runtime.server.serving_chat import create_chat_completion, render_chat
from llmservice.runtime.server.serving_common import ServingContext, check_token_ids, parse_body
from llmservice.runtime.server.serving_completions import create_completion

logger = logging.getLogger("llmservice.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CONTEXT = web.AppKey("context", ServingContext)
_METRICS = web.AppKey("metrics", ServerMetrics)
_PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})


def build_app(context: ServingContext, metrics: ServerMetrics) -> web.Application:
    """The application with every route of the API."""
    app = web.Application(
        client_max_size=context.config.max_body_bytes,
        middlewares=[_error_middleware, _auth_middleware, _admission_middleware],
    )
    app[_CONTEXT] = context
    app[_METRICS] = metrics
    app.router.add_post("/v1/chat/completions", _with_context(create_chat_completion))
    app.router.add_post("/v1/completions", _with_context(create_completion))
    app.router.add_get("/v1/models", _models)
    # `.+`: served names often hold a slash ("org/model"), sent raw or as %2F.
    app.router.add_get("/v1/models/{model:.+}", _model)
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/version", _version)
    app.router.add_post("/tokenize", _tokenize)
    app.router.add_post("/detokenize", _detokenize)
    return app


def access_logger(log_probes: bool) -> type[AbstractAccessLogger]:
    """An access-log class; probe paths are left out unless `log_probes`."""

    class _AccessLogger(AbstractAccessLogger):
        def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
            if not log_probes and request.path in _PROBE_PATHS:
                return
            self.logger.info(
                '%s "%s %s" %d %.3fs',
                request.remote, request.method, request.path, response.status, time,
            )  # fmt: skip

    return _AccessLogger


def _with_context(
    handler: Callable[[web.Request, ServingContext], Awaitable[web.StreamResponse]],
) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        return await handler(request, request.app[_CONTEXT])

    return wrapped


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as error:
        return error.to_response()
    except web.HTTPException as error:  # routing: 404 unknown path, 405 wrong method, 413
        if error.status < 400:
            raise
        message = error.reason if error.status != 413 else "the request body is too large"
        return APIError(error.status, message).to_response()
    except EngineDeadError:
        # The core died after the admission check and before the lifecycle marked it failed.
        retry_after_s = request.app[_CONTEXT].state.retry_after_s
        return overloaded("the engine is not available", retry_after_s).to_response()
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return APIError(500, "internal server error").to_response()


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    api_key = request.app[_CONTEXT].config.api_key
    if api_key is not None:
        check_api_key(request, api_key)
    return await handler(request)


@web.middleware
async def _admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in EXEMPT_PATHS:
        request.app[_CONTEXT].state.check_open()
    return await handler(request)


async def _models(request: web.Request) -> web.Response:
    context = request.app[_CONTEXT]
    data = [_model_card(context, name) for name in context.config.served_model_names]
    return web.json_response({"object": "list", "data": data})


async def _model(request: web.Request) -> web.Response:
    """OpenAI's "retrieve model": one entry of /v1/models, or 404."""
    context = request.app[_CONTEXT]
    name = request.match_info["model"]
    names = context.config.served_model_names
    if name not in names:
        raise model_not_found(name, names)
    return web.json_response(_model_card(context, name))


def _model_card(context: ServingContext, name: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "llmservice",
        "root": context.config.model,
        "max_model_len": context.max_model_len,
    }


async def _health(request: web.Request) -> web.Response:
    """Liveness: the engine process is alive and its loop keeps reporting."""
    state = request.app[_CONTEXT].state
    if state.failure is not None:
        return APIError(503, f"the engine is dead or hung: {state.failure}").to_response()
    return web.json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    """Readiness: loaded, healthy and not draining."""
    state = request.app[_CONTEXT].state
    if not state.ready:
        reason = "draining" if state.draining else "not ready"
        return web.json_response({"status": reason}, status=503)
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[_METRICS].render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def _version(request: web.Request) -> web.Response:
    return web.json_response({"version": __version__})


async def _tokenize(request: web.Request) -> web.Response:
    context = request.app[_CONTEXT]
    body = await parse_body(request, TokenizeRequest, context.config)
    tokenizer = context.require_tokenizer()
    if (body.prompt is None) == (body.messages is None):
        raise invalid_request("give exactly one of prompt and messages", "prompt")
    if body.messages is not None:
        text = render_chat(
            context, body.messages, body.add_generation_prompt, body.chat_template_kwargs
        )
        add_special = bool(body.add_special_tokens)
    else:
        text = body.prompt or ""
        add_special = body.add_special_tokens is not False
    tokens = await context.encode(text, add_special_tokens=add_special)
    result: dict[str, Any] = {
        "count": len(tokens),
        "max_model_len": context.max_model_len,
        "tokens": tokens,
    }
    if body.return_token_strs:
        result["token_strs"] = [tokenizer.decode([t], skip_special_tokens=False) for t in tokens]
    return web.json_response(result)


async def _detokenize(request: web.Request) -> web.Response:
    context = request.app[_CONTEXT]
    body = await parse_body(request, DetokenizeRequest, context.config)
    check_token_ids(body.tokens, "token id", "tokens", context.vocab_size)
    text = context.require_tokenizer().decode(body.tokens, skip_special_tokens=True)
    return web.json_response({"prompt": text})
