"""Regression tests for what a fuzz of the server found, each at the smallest level that shows it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.client_exceptions import ClientConnectionResetError

from llmservice.runtime.server.sse import ClientGone, SSEStream


class _OpenTransport:
    def is_closing(self) -> bool:
        return False


class _FakeRequest:
    transport = _OpenTransport()


class _ResponseClosedAtEof:
    """A response whose client leaves between the last event and the end of the body."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    async def write_eof(self) -> None:
        raise ClientConnectionResetError("Cannot write to closing transport")


def test_a_client_that_leaves_at_the_end_of_a_stream_is_gone_not_an_internal_error() -> None:
    # Found by the storm: the handler got ClientConnectionResetError from write_eof, and the
    # error middleware logged a traceback and answered 500.
    stream = SSEStream(_FakeRequest(), "cmpl-1")  # type: ignore[arg-type]
    response = _ResponseClosedAtEof()
    stream._response = response  # type: ignore[assignment]

    async def close() -> Any:
        await stream.close()

    with pytest.raises(ClientGone):
        asyncio.run(close())
    assert response.written == [b"data: [DONE]\n\n"]
