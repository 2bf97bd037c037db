"""The ``taquba-server`` command: open a store as its owner and serve its HTTP API.

Also reached as ``taquba serve`` (the core's CLI delegates to `main`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, cast

import trio

import taquba

from ._app import DEFAULT_MAX_BODY_SIZE
from ._auth import load_tokens, parse_tokens
from ._errors import InsecureBind
from ._server import DEFAULT_PORT, Server, is_loopback

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

    from taquba_cron import Scheduler

    from ._auth import Token

    SetupHook = Callable[[taquba.Queue, trio.Nursery], Awaitable[object]]

__all__ = ["main"]

ENV_TOKENS = "TAQUBA_SERVER_TOKENS"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taquba-server",
        description=(
            "Open a taquba store as its owner and serve its HTTP API (wire protocol v1). "
            "SIGINT or SIGTERM stop it gracefully; a second SIGINT stops it at once."
        ),
    )
    parser.add_argument("--store", required=True, help="store URL (memory://, file://, s3://)")
    parser.add_argument("--name", default="taquba", help="database name in the store")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0: any)")
    parser.add_argument(
        "--tokens-file",
        help=f"TOML file of [[token]] name/secret/scopes tables (default: ${ENV_TOKENS})",
    )
    parser.add_argument(
        "--advertise-url",
        help="the URL written to the owner record (default: the bound URL), e.g. behind a proxy",
    )
    parser.add_argument("--certfile", help="PEM certificate chain (serve HTTPS)")
    parser.add_argument("--keyfile", help="PEM private key of --certfile")
    parser.add_argument(
        "--max-body-size", type=int, default=DEFAULT_MAX_BODY_SIZE, help="bytes per request"
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        help="seconds requests in flight get on shutdown",
    )
    parser.add_argument(
        "--setup",
        metavar="MODULE:FUNCTION",
        help="async def setup(queue, nursery) run before listening, to start background "
        "components (cron Scheduler, workflow Runtime, ...) in the owner; when it returns a "
        "taquba_cron.Scheduler, the dashboard shows its schedules",
    )
    parser.add_argument(
        "--no-dashboard",
        action="store_true",
        help="do not serve the web dashboard under /ui",
    )
    parser.add_argument(
        "--jobs-result-prefix",
        metavar="PREFIX",
        help="result_prefix of the taquba-jobs runner the dashboard's Job results page lists "
        "(default: jobs-results, taquba-jobs' default)",
    )
    parser.add_argument(
        "--lease-duration",
        type=float,
        metavar="SECONDS",
        help="lease of a claim made without one (the queues' lease_duration, default 30)",
    )
    parser.add_argument(
        "--reaper-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between reaps of expired leases (default 5)",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    return parser


def _tokens(path: str | None) -> list[Token]:
    if path is not None:
        return load_tokens(path)
    return parse_tokens(os.environ.get(ENV_TOKENS, ""))


def _load_setup(spec: str) -> SetupHook:
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise taquba.UsageError(f"--setup takes MODULE:FUNCTION, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise taquba.UsageError(f"--setup: cannot import {module_name!r}: {exc}") from exc
    function: object = getattr(module, function_name, None)
    if function is None or not inspect.iscoroutinefunction(function):
        raise taquba.UsageError(f"--setup: {spec!r} is not an async function")
    return cast("SetupHook", function)


def _cron_of(components: object) -> Scheduler | None:
    """The cron scheduler a setup hook returned (duck-typed: taquba_cron is optional)."""
    if components is None:
        return None
    needed = ("schedules", "status", "pause", "resume", "next_fire_times")
    if not all(hasattr(components, name) for name in needed):
        raise taquba.UsageError(
            f"--setup returned {type(components).__name__}; return None or a "
            "taquba_cron.Scheduler (shown by the dashboard)"
        )
    return cast("Scheduler", components)


def _config(args: argparse.Namespace) -> taquba.QueueConfig | None:
    if args.lease_duration is None:
        return None
    return taquba.QueueConfig(lease_duration=args.lease_duration)


class _Stopping:
    """What the signal watcher acts on: the server once it exists, and how the run ended."""

    def __init__(self, hard_stop: trio.CancelScope) -> None:
        self.hard_stop = hard_stop
        self.server: Server | None = None
        self.signals = 0
        self.hard = False

    def signalled(self) -> None:
        self.signals += 1
        if self.signals == 1 and self.server is not None:
            print("taquba-server: shutting down", file=sys.stderr, flush=True)
            self.server.shutdown()
        else:  # a second signal, or one before the server listens (opening the store, setup)
            print("taquba-server: stopping now", file=sys.stderr, flush=True)
            self.hard = True
            self.hard_stop.cancel()


async def _watch_signals(signals: Any, stopping: _Stopping) -> None:
    async for _ in signals:
        stopping.signalled()


async def _own(
    args: argparse.Namespace,
    tokens: list[Token],
    setup: SetupHook | None,
    config: taquba.QueueConfig | None,
    stopping: _Stopping,
) -> None:
    async with (
        taquba.open_queue(
            args.store, args.name, config=config, reaper_interval=args.reaper_interval
        ) as queue,
        trio.open_nursery() as nursery,
    ):
        components = None if setup is None else await setup(queue, nursery)
        server = Server(
            queue,
            host=args.host,
            port=args.port,
            tokens=tokens,
            certfile=args.certfile,
            keyfile=args.keyfile,
            max_body_size=args.max_body_size,
            shutdown_grace=args.shutdown_grace,
            advertise_url=args.advertise_url,
            dashboard=not args.no_dashboard,
            cron=_cron_of(components),
            jobs_result_prefix=args.jobs_result_prefix,
        )

        async def serve(task_status: trio.TaskStatus[str]) -> None:
            await server.serve(task_status=task_status)
            nursery.cancel_scope.cancel()  # what the setup hook started

        url = await nursery.start(serve)
        stopping.server = server  # from now on, the first signal is a graceful stop
        print(f"taquba-server listening on {url}", flush=True)


async def _run(
    args: argparse.Namespace,
    tokens: list[Token],
    setup: SetupHook | None,
    config: taquba.QueueConfig | None,
) -> int:
    # The signals are caught from the start: a Ctrl-C while the store opens stops at once.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            stopping = _Stopping(nursery.cancel_scope)
            nursery.start_soon(_watch_signals, signals, stopping)
            await _own(args, tokens, setup, config, stopping)
            nursery.cancel_scope.cancel()  # the watcher
    return EXIT_INTERRUPTED if stopping.hard else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``taquba-server`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    0 after a graceful stop (SIGINT or SIGTERM), 130 after a second SIGINT, 2 for a usage
    error (a bad option, tokens file or store URL, or no token on a non-loopback host), 1 when
    serving failed (e.g. the port is taken, the store is unreachable).
    """
    args = _parser().parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    # The dashboard's audit trail (logins, requeues, purges, ...) is always written.
    audit = logging.getLogger("taquba_server.audit")
    if audit.getEffectiveLevel() > logging.INFO:
        audit.setLevel(logging.INFO)
    try:
        tokens = _tokens(args.tokens_file)
        if not tokens and not is_loopback(args.host):
            raise InsecureBind(args.host)
        setup = _load_setup(args.setup) if args.setup else None
        config = _config(args)
    except taquba.UsageError as exc:
        print(f"taquba-server: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return trio.run(_run, args, tokens, setup, config)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except taquba.UsageError as exc:
        print(f"taquba-server: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (taquba.TaqubaError, OSError) as exc:
        print(f"taquba-server: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if not all(isinstance(e, taquba.TaqubaError | OSError | KeyboardInterrupt) for e in leaves):
            raise
        if any(isinstance(e, KeyboardInterrupt) for e in leaves):
            return EXIT_INTERRUPTED
        for exc in leaves:
            print(f"taquba-server: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        usage = all(isinstance(e, taquba.UsageError) for e in leaves)
        return EXIT_USAGE if usage else EXIT_FAILURE


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(cast("BaseExceptionGroup[BaseException]", exc))
        else:
            yield exc
