"""API-key authentication: `Authorization: Bearer <key>` on every route but the probes.

The comparison is constant-time (`hmac.compare_digest`), so response timing does not reveal
how much of a guessed key was right.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from llmservice.runtime.server.errors import APIError

# Probes and scrapers cannot carry a key; these reveal nothing about the model's traffic.
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics", "/version"})


def check_api_key(request: web.Request, api_key: str) -> None:
    """401 unless the request carries the key (exempt paths always pass)."""
    if request.path in EXEMPT_PATHS:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    ):
        raise APIError(
            401,
            "missing or invalid API key (send 'Authorization: Bearer <key>')",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
