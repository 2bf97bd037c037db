"""Shared fixtures: a test queue, a real `Server` on loopback, and an HTTP client per encoding."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import ormsgpack
import pytest
import trio

import taquba
import taquba_server
from taquba.testing import open_test_queue


@pytest.fixture
async def queue() -> AsyncIterator[taquba.Queue]:
    # Retries at once (no backoff), so a test can nack and claim again without waiting.
    async with open_test_queue(config=taquba.QueueConfig(retry_backoff_base=0.0)) as queue:
        yield queue


@pytest.fixture
async def server(queue: taquba.Queue, nursery: trio.Nursery) -> AsyncIterator[taquba_server.Server]:
    server = taquba_server.Server(queue, port=0, shutdown_grace=5.0)
    await nursery.start(server.serve)
    yield server
    server.shutdown()


def to_json(value: object) -> object:
    """Bytes as base64 strings, the JSON form of the wire."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


@dataclass
class Api:
    """An httpx client speaking one encoding of the wire."""

    client: httpx.AsyncClient
    encoding: str  # "json" or "msgpack"
    token: str | None = None

    def b(self, data: bytes) -> object:
        """How ``data`` appears in a decoded response of this encoding."""
        return data if self.encoding == "msgpack" else base64.b64encode(data).decode()

    def headers(self) -> dict[str, str]:
        media = "application/json" if self.encoding == "json" else "application/msgpack"
        headers = {"Accept": media}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = self.headers()
        content = b""
        if body is not None:
            headers["Content-Type"] = headers["Accept"]
            if self.encoding == "json":
                content = json.dumps(to_json(body)).encode()
            else:
                content = ormsgpack.packb(body)
        response = await self.client.post(path, content=content, headers=headers)
        return response.status_code, self.decode(response)

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        response = await self.client.get(path, params=params, headers=self.headers())
        return response.status_code, self.decode(response)

    def decode(self, response: httpx.Response) -> Any:
        media = response.headers.get("content-type", "")
        if media.startswith("application/msgpack"):
            assert self.encoding == "msgpack" or response.status_code >= 400
            return ormsgpack.unpackb(response.content)
        assert media.startswith("application/json"), media
        return response.json()


@pytest.fixture
async def http(server: taquba_server.Server) -> AsyncIterator[httpx.AsyncClient]:
    assert server.url is not None
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(params=["json", "msgpack"])
def api(request: pytest.FixtureRequest, http: httpx.AsyncClient) -> Api:
    return Api(http, request.param)
