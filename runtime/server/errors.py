"""The one error shape of the HTTP API and the exception that carries it.

Every failure a client can see is an `APIError`: handlers raise it, the error middleware (and the
SSE writer, once a stream has begun) turns it into OpenAI's envelope
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web


class APIError(Exception):
    """A request failed in a way the client should be told about."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or _default_type(status)
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The envelope, as a JSON-ready dict."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_response(self) -> web.Response:
        """The envelope as an HTTP response with this error's status and headers."""
        response = web.Response(
            status=self.status,
            text=json.dumps(self.body()),
            content_type="application/json",
            headers=self.headers,
        )
        if self.status == 413:  # the body was not read: the connection cannot carry another
            response.force_close()
        return response


def invalid_request(message: str, param: str | None = None) -> APIError:
    """400: the request is malformed or asks for something out of range."""
    return APIError(400, message, param=param)


def model_not_found(name: str, served: Sequence[str]) -> APIError:
    """404 for a model name this server does not serve."""
    message = f"the model {name!r} does not exist; this server serves {', '.join(served)}"
    return APIError(404, message, param="model", code="model_not_found")


def not_implemented(feature: str, param: str) -> APIError:
    """400 for an OpenAI feature this server does not implement yet (never silently ignored)."""
    return APIError(400, f"{feature} is not supported by this server yet", param=param)


def overloaded(message: str, retry_after_s: int) -> APIError:
    """503 with Retry-After: too many waiting requests, or the server is draining."""
    return APIError(
        503,
        message,
        error_type="service_unavailable",
        code="overloaded",
        headers={"Retry-After": str(retry_after_s)},
    )


def _default_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status >= 500:
        return "internal_server_error"
    return "invalid_request_error"
