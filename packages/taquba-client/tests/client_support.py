"""Helpers of the taquba-client tests."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

import taquba
import taquba_server

if TYPE_CHECKING:
    from collections.abc import Sequence

FAST = taquba.QueueConfig(
    lease_duration=2.0,
    retry_backoff_base=0.05,
    retry_backoff_max=0.1,
    max_attempts=5,
    keep_done=math.inf,
)
"""A queue configuration for tests: short leases, short retry backoff."""


SERVER_SCRIPT = str(Path(sys.executable).with_name("taquba-server"))
"""The ``taquba-server`` console script of this environment."""


@dataclass
class ServerHandle:
    """An in-process server."""

    server: taquba_server.Server
    url: str
    queue: taquba.Queue


async def start_server(
    nursery: trio.Nursery,
    queue: taquba.Queue,
    tokens: Sequence[taquba_server.Token] | None = None,
    port: int = 0,
) -> ServerHandle:
    """Serve ``queue`` on 127.0.0.1 (any free port) in ``nursery``."""
    server = taquba_server.Server(queue, port=port, tokens=tokens, shutdown_grace=1.0)
    url = await nursery.start(server.serve)
    return ServerHandle(server, url, queue)


class ServerProcess:
    """``taquba-server`` in a subprocess (for the crash tests)."""

    def __init__(self, store: str, port: int = 0) -> None:
        self.store = store
        self.port = port
        self.process: trio.Process | None = None
        self.url = ""

    async def start(self, nursery: trio.Nursery) -> str:
        """Start it and wait for its "listening on" line; return its URL."""
        send, receive = trio.open_memory_channel[str](1)

        async def run() -> None:
            self.process = await trio.lowlevel.open_process(
                [SERVER_SCRIPT, "--store", self.store, "--port", str(self.port)],
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert self.process.stdout is not None
            buffer = b""
            async for chunk in self.process.stdout:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    text = line.decode()
                    if text.startswith("taquba-server listening on "):
                        await send.send(text.rsplit(" ", 1)[1])

        nursery.start_soon(run)
        self.url = await receive.receive()
        if self.port == 0:
            self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def kill(self) -> None:
        """SIGKILL it."""
        assert self.process is not None
        self.process.kill()

    async def wait(self) -> int:
        """Wait for it to exit."""
        assert self.process is not None
        return await self.process.wait()


class DroppingProxy:
    """A TCP proxy in front of a server that can drop answers: the request reaches the server,
    the answer never reaches the client (the fault a timeout or a crashed link leaves)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.drop_answers = 0
        """How many of the next answers to drop (the connection is closed instead)."""
        self.dropped = 0
        self.url = ""

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (any port); report the proxy's URL."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        task_status.started(self.url)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        async with client, server, trio.open_nursery() as nursery:

            async def upstream() -> None:
                async for data in client:
                    await server.send_all(data)
                nursery.cancel_scope.cancel()

            async def downstream() -> None:
                async for data in server:
                    if self.drop_answers > 0:
                        self.drop_answers -= 1
                        self.dropped += 1
                        nursery.cancel_scope.cancel()  # close both ends, answer unsent
                        return
                    await client.send_all(data)
                nursery.cancel_scope.cancel()

            nursery.start_soon(upstream)
            nursery.start_soon(downstream)
