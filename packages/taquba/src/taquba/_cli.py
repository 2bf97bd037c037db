"""The ``taquba`` command: the demo and the administration commands.

::

    taquba demo [--store URL] [--jobs N] [--workers N] [--keep]
    taquba inspect
    taquba jobs QUEUE [--status STATUS] [--limit N]
    taquba job show JOB_ID
    taquba job cancel JOB_ID [--force]
    taquba dead list QUEUE [--limit N]
    taquba dead requeue QUEUE (JOB_ID | --all) [--force]
    taquba dead purge QUEUE [--force]
    taquba purge QUEUE (--dead | --done) [--yes] [--force]
    taquba enqueue QUEUE [PAYLOAD | --file PATH] [--priority N] [--delay S | --run-at TIME]
                   [--dedup-key KEY] [--header K=V]... [--max-attempts N] [--job-id ID]
    taquba top [--interval S]
    taquba serve ...   (taquba-server's command, when installed)
    taquba cron ...    (and any other command a ``taquba.cli`` entry-point plugin adds)

Every command takes ``--store`` and ``--db``, defaulting to the demo's store
(``./.taquba-demo``) and the library's database name (``taquba``, as `open_queue`), so
``taquba inspect`` right after ``taquba demo`` shows what the demo left, and ``taquba inspect
--store DIR`` what an app that called ``open_queue(DIR)`` keeps there. The admin commands also
take ``--json`` (one JSON document on stdout), ``--server URL`` (or ``TAQUBA_SERVER``) and
``--token`` (or ``TAQUBA_TOKEN``): they then act through that taquba-server's HTTP API
(`_cli_remote.py`) and print the same output. The commands live in `_cli_commands.py` and
`_cli_top.py`, the parser in `_cli_parser.py`, where they act in `_cli_session.py`.

Owner check. The commands that open the store as its writer (``job cancel``, ``dead requeue``,
``dead purge``, ``purge``, ``enqueue``) first read the store's owner record through a reader;
while it is fresh (a live owner holds the store) they refuse, naming the owner and its server
address, and write nothing. ``--force`` opens the store anyway, fencing the owner.

Exit status: 0 on success, 1 when something failed at run time (storage, a demo check, a live
owner, a purge not confirmed, a job to cancel not found), 2 for bad input (an unusable store
URL, a missing store, queue or job, a bad option), 130 after SIGINT (Ctrl-C; ``taquba top``
exits 0, as that is how it ends) and 143 after SIGTERM. Errors are one line on stderr, never a
traceback.

Signals. Each command runs under `trio.open_signal_receiver` for SIGINT and SIGTERM (the
command installs these handlers, the library never does): the first signal cancels the
command, whose writes in flight finish and whose store is closed as on any cancellation, then
one line says so. A second signal exits at once, without waiting for the store to close.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

import trio

from taquba import TaqubaError, UsageError
from taquba._cli_parser import build_parser
from taquba._cli_session import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    CliSession,
    handler_of,
)
from taquba._demo import (
    CHILD_COMMAND,
    DEFAULT_DB,
    DEFAULT_STORE,
    DemoError,
    DemoOptions,
    run_child,
    run_demo,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["CliError", "build_parser", "main"]

EXIT_SIGINT: Final = 128 + signal.SIGINT
EXIT_SIGTERM: Final = 128 + signal.SIGTERM


class _Interrupted(Exception):
    """The command was stopped by a signal (SIGINT or SIGTERM) and has wound down."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        """The signal that stopped it."""


def _signal_exit(signum: int) -> int:
    return EXIT_SIGINT if signum == signal.SIGINT else 128 + signum


async def _until_signal(command: Callable[..., Awaitable[int]], *args: Any) -> int:
    """Run ``command(*args)``; the first SIGINT or SIGTERM cancels it (`_Interrupted`).

    A second signal ends the process at once (``os._exit``) with the same status.
    """
    received: list[int] = []
    result: list[int] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            work = trio.CancelScope()

            async def watch() -> None:
                async for signum in signals:
                    if received:
                        sys.stderr.write("\ntaquba: interrupted again: exiting now\n")
                        sys.stderr.flush()
                        os._exit(_signal_exit(received[0]))
                    received.append(signum)
                    work.cancel()

            async def run() -> None:
                with work:
                    result.append(await command(*args))
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(run)
    if received:
        raise _Interrupted(received[0])
    return result[0]


def _run(command: Callable[..., Awaitable[int]], *args: Any) -> int:
    return trio.run(_until_signal, command, *args)


def _demo(args: argparse.Namespace) -> int:
    store: str | None = args.store
    options = DemoOptions(
        store=store if store is not None else DEFAULT_STORE,
        db=args.db,
        jobs=args.jobs,
        workers=args.workers,
        keep=args.keep,
        store_is_default=store is None,
    )
    return _run(run_demo, options)


def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    command: str = args.command
    url: str | None = args.store if "store" in args else None
    db: str = args.db if "db" in args else DEFAULT_DB
    if command == "demo":
        return _demo(args)
    if command == CHILD_COMMAND:
        return _run(run_child, url or DEFAULT_STORE, db, args.count)
    handler = handler_of(args)
    if handler is None:  # a plugin's command without a handler: show its help
        raise CliError(f"`taquba {command}` needs an action: see `taquba {command} --help`")
    server: str | None = (
        getattr(args, "server", None)
        or args.global_server
        or os.environ.get("TAQUBA_SERVER")
        or None
    )
    token: str | None = (
        getattr(args, "token", None) or args.global_token or os.environ.get("TAQUBA_TOKEN") or None
    )
    session = CliSession(
        url,
        db,
        server=server,
        token=token,
        force=getattr(args, "force", False),
        json=getattr(args, "json", False),
        out=out,
    )
    try:
        return _run(handler, args, session)
    except _Interrupted as exc:
        if getattr(args, "sigint_ends", False) and exc.signum == signal.SIGINT:
            return EXIT_OK  # `taquba top`: Ctrl-C is how it ends
        raise


def _serve(argv: Sequence[str]) -> int:
    """``taquba serve ARGS``: taquba-server's command, if it is installed."""
    try:
        importlib.import_module("taquba_server")
    except ImportError:
        reason = "install taquba-server (pip install taquba-server)"
    else:
        try:
            module = importlib.import_module("taquba_server._cli")
            serve_main = cast("Callable[[list[str]], int]", module.main)
        except (ImportError, AttributeError) as exc:
            reason = f"the installed taquba-server has no command ({exc}); upgrade it"
        else:
            return serve_main(list(argv))
    print(f"taquba: error: `taquba serve` needs taquba-server: {reason}", file=sys.stderr)
    return EXIT_USAGE


# ------------------------------------------------------------------------------ errors


def _interrupted(exc: BaseException) -> int | None:
    """The signal ``exc`` reports (`_Interrupted`, alone or in a group), or None."""
    if isinstance(exc, _Interrupted):
        return exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        for leaf in group.exceptions:
            found = _interrupted(leaf)
            if found is not None:
                return found
    return None


def _reportable(exc: BaseException) -> tuple[str, int] | None:
    """The message and exit status to report ``exc`` with, or None if it is a bug."""
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        for leaf in group.exceptions:
            found = _reportable(leaf)
            if found is not None:
                return found
        return None
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, UsageError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, (TaqubaError, OSError)):
        return f"{type(exc).__name__}: {exc}", EXIT_FAILURE
    if isinstance(exc, DemoError):
        return str(exc), EXIT_FAILURE
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taquba`` command; return its exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 on a run-time failure, 2 on bad input (argparse exits with 2 itself
        for malformed options), 130 after SIGINT, 143 after SIGTERM.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["serve"]:
        return _serve(arguments[1:])
    args = build_parser().parse_args(arguments)
    logging.basicConfig(format="taquba: %(name)s: %(levelname)s: %(message)s")
    try:
        return _dispatch(args, sys.stdout)
    except BaseException as exc:
        signum = _interrupted(exc)
        if signum is None:
            if not isinstance(exc, Exception):
                raise
            return _report(exc)
        name = (
            "interrupted"
            if signum == signal.SIGINT
            else f"stopped by {signal.Signals(signum).name}"
        )
        sys.stdout.flush()
        print(f"\ntaquba: {name}", file=sys.stderr)
        return _signal_exit(signum)


def _report(exc: Exception) -> int:
    found = _reportable(exc)
    if found is None:
        raise exc
    message, code = found
    print(f"taquba: error: {' '.join(message.split())}", file=sys.stderr)
    return code
