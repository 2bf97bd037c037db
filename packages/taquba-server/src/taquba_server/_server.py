"""`Server`: the API served by hypercorn on trio, with TLS and graceful shutdown."""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
from typing import TYPE_CHECKING, Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve  # pyright: ignore[reportUnknownVariableType]

import taquba

from ._app import DEFAULT_MAX_BODY_SIZE, ServerApp
from ._errors import InsecureBind

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from taquba_cron import Scheduler

    from ._auth import Token

__all__ = ["Server", "is_loopback"]

log = logging.getLogger("taquba_server")

DEFAULT_PORT = 8700
"""The default TCP port."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Started:
    """The ``task_status`` hypercorn's ``serve`` gets: it reports the bound URLs to us."""

    def __init__(self, callback: Callable[[list[str]], None]) -> None:
        self._callback = callback

    def started(self, value: Any = None) -> None:
        self._callback(cast("list[str]", value or []))


class Server:
    """Serve a queue's HTTP API (wire protocol v1) on one address.

    ::

        server = taquba_server.Server(queue, port=8700, tokens=tokens)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.serve)   # listening
            ...
            server.shutdown()                          # graceful stop

    The server is the store's owner process: run one per store. Without ``tokens`` every
    request is allowed, so the server refuses a non-loopback ``host`` (`InsecureBind`).
    """

    def __init__(
        self,
        queue: taquba.Queue,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        tokens: Sequence[Token] | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        shutdown_grace: float | None = 30.0,
        advertise_url: str | None = None,
        dashboard: bool = True,
        cron: Scheduler | None = None,
        jobs_result_prefix: str | None = None,
    ) -> None:
        """Check the options; nothing listens before `serve`.

        Args:
            queue: the open queue to serve (the server does not close it).
            host: the address to listen on.
            port: the TCP port (0: any free port; `serve` reports the one bound).
            tokens: bearer tokens and their scopes (see `Token`); none: allow every request,
                on a loopback ``host`` only.
            certfile: a PEM certificate chain: serve HTTPS (with ``keyfile``).
            keyfile: the certificate's PEM private key.
            max_body_size: the largest request body in bytes.
            shutdown_grace: seconds requests in flight get after `shutdown` (None: no limit);
                long polls end at once with their empty answer.
            advertise_url: the URL written to the owner record (default: the bound URL).
            dashboard: serve the web dashboard under ``/ui`` (login with the same tokens;
                read-only for ``produce``/``work``, actions for ``admin``); while serving, the
                server samples the queue statistics every 15 s for its charts.
            cron: a `taquba_cron.Scheduler` whose schedules the dashboard shows, pauses and
                resumes.
            jobs_result_prefix: the ``result_prefix`` of the taquba-jobs runner whose
                results the dashboard's "Job results" page lists (default: taquba-jobs'
                default, ``"jobs-results"``); the page needs taquba-jobs installed.

        Raises:
            InsecureBind: a non-loopback ``host`` with no token.
            UsageError: another bad argument.
        """
        if not isinstance(host, str) or not host:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise taquba.UsageError("host must be a non-empty str")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise taquba.UsageError(f"port must be an int from 0 to 65535, not {port!r}")
        if (certfile is None) != (keyfile is None):
            raise taquba.UsageError("give certfile and keyfile together")
        if shutdown_grace is not None and (
            isinstance(shutdown_grace, bool)
            or not isinstance(shutdown_grace, int | float)  # pyright: ignore[reportUnnecessaryIsInstance]
            or math.isnan(shutdown_grace)
            or shutdown_grace < 0
        ):
            raise taquba.UsageError("shutdown_grace must be a non-negative number or None")
        if not tokens and not is_loopback(host):
            raise InsecureBind(host)
        self._app = ServerApp(
            queue,
            tokens=tokens,
            max_body_size=max_body_size,
            dashboard=dashboard,
            cron=cron,
            jobs_result_prefix=jobs_result_prefix,
        )
        self._queue = queue
        self._host = host
        self._port = port
        self._certfile = certfile
        self._keyfile = keyfile
        self._shutdown_grace = shutdown_grace
        self._advertise_url = advertise_url
        self._shutdown = trio.Event()
        self._stopped_while_open = False
        self._serving = False
        self._url: str | None = None

    @property
    def url(self) -> str | None:
        """The URL the server listens on (None before `serve` is listening)."""
        return self._url

    def _bind(self) -> socket.socket:
        """Bind the listening socket (closed again if binding fails: nothing leaks)."""
        family, kind, proto, _, address = socket.getaddrinfo(
            self._host.strip("[]"), self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def _config(self, sock: socket.socket) -> Config:
        config = Config()
        # hypercorn adopts the bound socket (and closes it when it stops).
        config.bind = [f"fd://{sock.detach()}"]
        if self._certfile is not None:
            config.certfile = self._certfile
            config.keyfile = self._keyfile
        grace = self._shutdown_grace
        config.graceful_timeout = math.inf if grace is None else float(grace)
        config.accesslog = None
        config.errorlog = logging.getLogger("taquba_server.hypercorn")
        # A long poll holds its request up to 60 s; keep-alive well above a client's poll.
        config.keep_alive_timeout = 75.0
        return config

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until `shutdown` (or cancellation).

        Calls ``task_status.started(url)`` once listening, with the URL actually bound
        (``http://127.0.0.1:PORT``, ``https://...`` with TLS), and writes it to the store's
        owner record when the queue supports one.

        Returns:
            After `shutdown`: new connections are refused, requests in flight had up to
            ``shutdown_grace`` seconds to finish (long polls end at once with their empty
            answer), and the rest were cancelled.

        Error handling:
            A bind failure (``OSError``, e.g. the port is taken) is raised before ``started``.
            When the queue stops under the server (`taquba.Fenced`: another process opened
            the store as writer; `taquba.QueueClosed`; `taquba.StorageFatal`), the server
            shuts down gracefully and `serve` raises that error; a queue closed after
            `shutdown` was called (the application's own orderly stop) is a clean return.
            Cancelling the surrounding scope is the hard stop; claims handed out stay with
            their lease and come back to the queue when it expires.

        Raises:
            UsageError: `serve` is already running.
            StorageError: the queue's failure (`taquba.Fenced`, ...), after the shutdown.
        """
        if self._serving:
            raise taquba.UsageError("Server.serve is already running")
        if self._shutdown.is_set():
            return
        self._serving = True
        app = self._app

        async def started_trigger() -> None:
            await self._shutdown.wait()
            app.begin_shutdown()

        def listening(binds: list[str]) -> None:
            self._on_listening(binds[0] if binds else None, task_status)

        queue = self._queue

        async def watch_queue() -> None:
            await queue.wait_stopped()
            self._stop()  # the queue failed or was closed: nothing left to serve

        failure: list[Exception] = []
        try:
            config = self._config(self._bind())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_queue)
                if app.dashboard is not None:
                    nursery.start_soon(app.dashboard.run_sampler)
                try:
                    await hypercorn_serve(
                        app,  # pyright: ignore[reportArgumentType]
                        config,
                        shutdown_trigger=started_trigger,
                        task_status=cast("trio.TaskStatus[list[str]]", _Started(listening)),
                        mode="asgi",
                    )
                except Exception as exc:
                    failure.append(exc)
                nursery.cancel_scope.cancel()
        finally:
            self._serving = False
            if queue.failure is None:
                queue.set_owner_address(None)
        if failure:
            raise failure[0]
        # An application that asked the server to stop and then closed its queue (the usual
        # order when the queue's `async with` ends first) gets a clean return. That is decided
        # by what `shutdown()` saw, not by which task noticed the close first.
        if queue.failure is not None and not (
            self._stopped_while_open and isinstance(queue.failure, taquba.QueueClosed)
        ):
            raise queue.failure

    def _on_listening(self, url: str | None, task_status: trio.TaskStatus[str]) -> None:
        assert url is not None
        self._url = url
        self._queue.set_owner_address(self._advertise_url or url)
        task_status.started(url)

    def shutdown(self) -> None:
        """Stop gracefully: refuse new work, let requests in flight finish, then `serve` returns.

        Idempotent; called before `serve`, `serve` returns at once. Call it from the trio
        thread (from another thread: ``trio.from_thread.run_sync(server.shutdown)``).
        """
        if self._queue.failure is None:
            self._stopped_while_open = True
        self._stop()

    def _stop(self) -> None:
        self._shutdown.set()
        self._app.begin_shutdown()
