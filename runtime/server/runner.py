"""The aiohttp runner, with HTTP parse errors answered in the API's error envelope.

aiohttp rejects an oversized request line or header, or a malformed request, before any
middleware runs, with a plain-text 400 from its protocol handler. `EnvelopeRunner` swaps that
handler's error page for the envelope: 413 for headers that are too large, 400 otherwise.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from llmservice.runtime.server.errors import APIError


class _EnvelopeRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        self.logger.debug("rejected a malformed request from %s: %s", request.remote, exc)
        if isinstance(exc, LineTooLong) or "Too many headers" in str(exc):
            error = APIError(
                413, "the request line or headers are too large", code="headers_too_large"
            )
        else:
            error = APIError(status, f"malformed HTTP request: {message or exc}")
        response = error.to_response()
        response.force_close()
        return response


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class EnvelopeRunner(web.AppRunner):
    """An AppRunner whose connections answer parse errors with the error envelope."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same handler, request factory and settings; only the per-connection class differs.
        return _EnvelopeServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
