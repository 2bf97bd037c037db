"""Test support: an HTTP receiver on loopback, worker runs, trio socket/DNS instrumentation.

- `start_receiver`: a hypercorn (trio worker) server on 127.0.0.1 serving a tiny ASGI app that
  captures every request and answers from per-path scripts of `Reply` (status, headers,
  body, delay); it counts the requests in flight and can hold replies until enough are.
- `RecordingSocketFactory`: a trio socket factory that records every socket created while it
  is installed, so tests can assert that a refused destination saw no connection attempt.
- `FakeResolver`: a trio hostname resolver answering made-up names (``*.test``) with chosen
  addresses; numeric hosts never reach it.
- ``LOOPBACK``: the allow-list tests use to reach the receiver.
"""

from __future__ import annotations

import socket as stdlib_socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

import taquba
import taquba_webhooks as tw

LOOPBACK = tw.DestinationPolicy(allow=["127.0.0.0/8", "::1/128"])


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An ASGI app that records requests and plays scripted replies per path."""

    def __init__(self) -> None:
        self.requests: list[Captured] = []
        self.scripts: dict[str, deque[Reply]] = {}
        self.default = Reply()
        self.base_url = ""
        self.port = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.gather = 0
        """Hold replies until this many requests are in flight at once (once; 0: never)."""
        self._gathered = trio.Event()

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    def script(self, path: str, *replies: Reply) -> None:
        self.scripts.setdefault(path, deque()).extend(replies)

    def received(self, path: str | None = None) -> list[Captured]:
        return [r for r in self.requests if path is None or r.path == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        self.requests.append(Captured(scope["method"], path, headers, body))
        script = self.scripts.get(path)
        reply = script.popleft() if script else self.default
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.in_flight >= self.gather:
                self._gathered.set()
            with trio.move_on_after(30):  # a hang guard: only a sender that never gets there
                await self._gathered.wait()
            if reply.delay:
                await trio.sleep(reply.delay)
            raw_headers = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
            await send(
                {"type": "http.response.start", "status": reply.status, "headers": raw_headers}
            )
            await send({"type": "http.response.body", "body": reply.body})
        finally:
            self.in_flight -= 1


async def start_receiver(
    nursery: trio.Nursery, *, certfile: str | None = None, keyfile: str | None = None
) -> Receiver:
    app = Receiver()
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.2
    if certfile is not None:
        config.certfile = certfile
        config.keyfile = keyfile
    stop = trio.Event()
    binds = await nursery.start(
        partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    )
    app.base_url = binds[0]
    app.port = int(binds[0].rsplit(":", 1)[1])
    return app


class RecordingSocketFactory(trio.abc.SocketFactory):
    def __init__(self) -> None:
        self.created: list[tuple[int, int]] = []

    def socket(
        self,
        family: stdlib_socket.AddressFamily | int = stdlib_socket.AF_INET,
        type: stdlib_socket.SocketKind | int = stdlib_socket.SOCK_STREAM,  # noqa: A002
        proto: int = 0,
    ) -> trio.socket.SocketType:
        self.created.append((int(family), int(type)))
        return trio.socket.from_stdlib_socket(stdlib_socket.socket(family, type, proto))


class FakeResolver(trio.abc.HostnameResolver):
    """Answers names in ``table`` (a list of addresses, or a function of the call number)."""

    def __init__(self) -> None:
        self.table: dict[str, list[str] | Callable[[int], list[str]]] = {}
        self.calls: dict[str, int] = {}

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,  # noqa: A002
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        await trio.lowlevel.checkpoint()
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in self.table:
            raise stdlib_socket.gaierror(stdlib_socket.EAI_NONAME, "Name or service not known")
        self.calls[name] = self.calls.get(name, 0) + 1
        entry = self.table[name]
        addresses = entry(self.calls[name]) if callable(entry) else entry
        port_number = int(port) if port is not None else 0
        results: list[Any] = []
        for address in addresses:
            if ":" in address:
                results.append(
                    (
                        stdlib_socket.AF_INET6,
                        stdlib_socket.SOCK_STREAM,
                        6,
                        "",
                        (address, port_number, 0, 0),
                    )
                )
            else:
                results.append(
                    (
                        stdlib_socket.AF_INET,
                        stdlib_socket.SOCK_STREAM,
                        6,
                        "",
                        (address, port_number),
                    )
                )
        return results

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        raise NotImplementedError


FAST = taquba.QueueConfig(max_attempts=3, retry_backoff_base=0.0)


async def settled(queue: taquba.Queue, queue_name: str = tw.DEFAULT_QUEUE_NAME) -> bool:
    stats = await queue.stats(queue_name)
    return stats.pending + stats.scheduled + stats.claimed == 0


def webhook_worker(queue: taquba.Queue, **options: Any) -> tw.WebhookWorker:
    """A worker of ``queue`` that polls every 50 ms unless told otherwise."""
    options.setdefault("poll_interval", 0.05)
    return tw.WebhookWorker(queue, **options)


async def run_worker(
    queue: taquba.Queue,
    worker: tw.WebhookWorker,
    until: Callable[[], Awaitable[bool]] | None = None,
    *,
    limit: float = 15.0,
) -> None:
    """Serve ``worker`` until ``until()`` holds (default: nothing left on its queue name).

    Started with ``nursery.start`` and stopped with `WebhookWorker.shutdown`, which is sticky:
    build a new worker for every run.
    """
    check = until or partial(settled, queue, worker.queue_name)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        await wait_until(check, limit)
        worker.shutdown()


async def wait_until(check: Callable[[], Awaitable[bool] | bool], limit: float = 10.0) -> None:
    """Poll ``check`` every 10 ms until it holds; fail after ``limit`` seconds."""
    with trio.fail_after(limit):
        while True:
            outcome = check()
            if not isinstance(outcome, bool):
                outcome = await outcome
            if outcome:
                return
            await trio.sleep(0.01)
