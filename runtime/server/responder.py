"""Drive a `Generation` to the client: one JSON body, or an SSE stream of chunks.

The endpoint supplies a `ChoiceBuilder` (what a chunk and the final body look like); this
module owns what both endpoints share: the streaming loop, `stream_options` (one final usage
chunk with `choices: []`, or usage on every chunk), errors after the stream began (an SSE
error event), and the abort of the request whenever the handler leaves early -- the client
went away, the engine died, or anything raised.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from llmservice.runtime.server.core_client import EngineDeadError
from llmservice.runtime.server.errors import APIError
from llmservice.runtime.server.generation import Generation
from llmservice.runtime.server.protocol import StreamOptions
from llmservice.runtime.server.sse import ClientGone, SSEStream

if TYPE_CHECKING:  # it imports torch: loaded only once the engine core is starting
    from llmservice.runtime.output_processor import CompletionDelta

logger = logging.getLogger(__name__)


class ChoiceBuilder(Protocol):
    """Builds one endpoint's chunks and final body while deltas arrive."""

    def opening(self) -> list[dict[str, Any]]:
        """Choices to stream before any token (chat: the role; completions: an echo)."""

    def on_delta(self, index: int, delta: CompletionDelta) -> dict[str, Any] | None:
        """Record a delta; the streamed choice for it, or None when there is nothing to send."""

    def usage(self) -> dict[str, Any]:
        """The usage so far (all of it once every choice has finished)."""

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        """A streaming chunk around `choices`."""

    def response(self) -> dict[str, Any]:
        """The non-streaming body."""


async def respond(
    request: web.Request,
    generation: Generation,
    builder: ChoiceBuilder,
    stream: bool,
    stream_options: StreamOptions | None,
) -> web.StreamResponse:
    """Answer the request from its generation; the generation is aborted if not finished."""
    try:
        if stream:
            return await _stream(request, generation, builder, stream_options)
        builder.opening()  # recorded into the body (an echo), not sent on its own
        async for index, delta in generation:
            builder.on_delta(index, delta)
        return web.json_response(
            builder.response(), headers={"X-Request-Id": generation.request_id}
        )
    except EngineDeadError as error:
        raise APIError(500, f"the engine is not available: {error}") from None
    finally:
        generation.abort()  # no-op once every choice has finished


async def _stream(
    request: web.Request,
    generation: Generation,
    builder: ChoiceBuilder,
    options: StreamOptions | None,
) -> web.StreamResponse:
    include_usage = bool(options and options.include_usage)
    continuous_usage = bool(options and options.continuous_usage_stats)
    sse = SSEStream(request, generation.request_id)

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        body = builder.chunk(choices)
        if continuous_usage:
            body["usage"] = builder.usage()
        elif include_usage:
            body["usage"] = None
        return body

    try:
        await sse.open()
        for opening in builder.opening():
            await sse.send(chunk([opening]))
        try:
            async for index, delta in generation:
                choice = builder.on_delta(index, delta)
                if choice is not None:
                    await sse.send(chunk([choice]))
        except EngineDeadError as error:
            await sse.send_error(APIError(500, f"the engine is not available: {error}"))
        except APIError as error:
            await sse.send_error(error)
        else:
            if include_usage:
                final = builder.chunk([])
                final["usage"] = builder.usage()
                await sse.send(final)
        await sse.close()
    except ClientGone:
        logger.info("client of %s left the stream; aborting it", generation.request_id)
        generation.abort()
    return sse.response
