"""Writes self-contained kubeconfig files (certificates embedded, so a file can be copied)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path,
    server: str,
    ca_cert: Path,
    *,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """A kubeconfig with one cluster, one user (client certificate or bearer token), one context."""
    if (client_cert is None) == (token is None):
        raise ValueError("a kubeconfig user needs either a client certificate or a token")
    user: dict[str, str] = {}
    if token is not None:
        user["token"] = token
    else:
        if client_key is None or client_cert is None:
            raise ValueError("a client certificate needs its key")
        user["client-certificate-data"] = _b64(client_cert)
        user["client-key-data"] = _b64(client_key)
    context: dict[str, str] = {"cluster": "llmservice-e2e", "user": "user"}
    if namespace is not None:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "llmservice-e2e",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "llmservice-e2e", "context": context}],
        "current-context": "llmservice-e2e",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
