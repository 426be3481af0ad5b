"""A small async Kubernetes API client: server-side apply, create, get, list, delete, status
patches.

kopf watches and dispatches but has no server-side apply, so the reconciler talks to the API
through this client. It authenticates with the same login functions kopf uses (the in-cluster
service account, else the kubeconfig) and logs in again once when a token expires (401).
Failures surface as `ApiError` carrying the API server's status code and message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

Obj = dict[str, Any]
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML, so a JSON body is fine
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def resource_path(
    api_version: str, plural: str, namespace: str | None, name: str | None = None
) -> str:
    """/api/v1/namespaces/ns/pods/name or /apis/group/version/... for an object or a list."""
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = root + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{plural}"
    return path + (f"/{quote(name)}" if name else "")


class KubeClient:
    """One aiohttp session against one API server."""

    def __init__(self, login: Callable[[], Any]) -> None:
        """`login` returns a kopf.ConnectionInfo (server, CA, token or client certificate)."""
        self._login = login
        self._session: aiohttp.ClientSession | None = None
        self._server = ""

    def _connect(self) -> aiohttp.ClientSession:
        info = self._login()
        if info is None:
            raise ApiError(401, "Unauthorized", "no service account and no kubeconfig found")
        self._server = info.server.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
            headers=info.as_http_headers(),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Obj | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        for attempt in range(2):
            session = self._session or self._connect()
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type, "Accept": "application/json"}
            async with session.request(
                method, self._server + path, params=params, data=data, headers=headers
            ) as response:
                if response.status == 401 and attempt == 0:
                    await self.close()  # the token rotated: log in again once
                    continue
                text = await response.text()
                if response.status >= 400:
                    raise _error(response.status, text)
                return json.loads(text) if text else {}
        raise ApiError(401, "Unauthorized", "the API server refused the credentials twice")

    async def apply(self, manifest: Obj, plural: str, field_manager: str) -> Obj:
        """Server-side apply, taking over fields another manager changed (force)."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], plural, meta.get("namespace"), meta["name"])
        params = {"fieldManager": field_manager, "force": "true"}
        return await self.request(
            "PATCH", path, params=params, body=manifest, content_type=APPLY_PATCH
        )

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> Obj | None:
        try:
            return await self.request("GET", resource_path(api_version, plural, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(
        self,
        api_version: str,
        plural: str,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        params = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        path = resource_path(api_version, plural, namespace)
        return list((await self.request("GET", path, params=params)).get("items") or [])

    async def delete(self, api_version: str, plural: str, namespace: str, name: str) -> None:
        try:
            await self.request("DELETE", resource_path(api_version, plural, namespace, name))
        except ApiError as error:
            if error.status != 404:
                raise

    async def create(self, manifest: Obj, plural: str) -> Obj:
        """POST a new object (its name may come from metadata.generateName)."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], plural, meta.get("namespace"))
        return await self.request("POST", path, body=manifest)

    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, status: Obj
    ) -> Obj:
        path = resource_path(api_version, plural, namespace, name) + "/status"
        return await self.request("PATCH", path, body={"status": status}, content_type=MERGE_PATCH)


def _error(status: int, text: str) -> ApiError:
    try:
        body = json.loads(text)
    except ValueError:
        return ApiError(status, "", text.strip()[:2000])
    return ApiError(status, str(body.get("reason", "")), str(body.get("message", text))[:4000])
