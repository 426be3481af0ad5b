"""Server-sent events: `data: {json}` chunks, then `data: [DONE]`.

A write to a client that has gone raises `ClientGone`, which the handler turns into an abort of
its request; an error after the stream has begun is sent as one `data: {"error": ...}` event,
since the status line is already out.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from llmservice.runtime.server.errors import APIError


class ClientGone(Exception):
    """The client closed the connection."""


def client_gone(request: web.BaseRequest) -> bool:
    """Whether the client's connection is closed (or closing)."""
    transport = request.transport
    return transport is None or transport.is_closing()


class SSEStream:
    """One streaming response."""

    def __init__(self, request: web.Request, request_id: str) -> None:
        self._request = request
        self._response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Request-Id": request_id,
            }
        )

    @property
    def response(self) -> web.StreamResponse:
        """The aiohttp response (for the handler to return)."""
        return self._response

    async def open(self) -> None:
        """Send the status line and headers; ClientGone when the client has left."""
        try:
            await self._response.prepare(self._request)
        except ConnectionError as error:
            raise ClientGone from error

    async def send(self, payload: dict[str, Any]) -> None:
        """One `data:` event; ClientGone when the client has left."""
        await self._write(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")

    async def send_error(self, error: APIError) -> None:
        """The error envelope as an event (the stream has begun: no status code to use)."""
        await self.send(error.body())

    async def close(self) -> None:
        """`data: [DONE]` and the end of the body."""
        await self._write(b"data: [DONE]\n\n")
        try:
            await self._response.write_eof()
        except ConnectionError as error:  # the client left right after the last event
            raise ClientGone from error

    async def _write(self, data: bytes) -> None:
        if client_gone(self._request):
            raise ClientGone
        try:
            await self._response.write(data)
        except ConnectionError as error:  # aiohttp's ClientConnectionResetError included
            raise ClientGone from error
