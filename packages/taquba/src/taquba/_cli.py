"""The ``taquba`` command: the demo and small administration commands.

::

    taquba demo [--store URL] [--jobs N] [--workers N] [--keep]
    taquba inspect [--store URL] [--db NAME]
    taquba dead list QUEUE [--limit N]
    taquba dead requeue QUEUE (JOB_ID | --all) [--force]
    taquba dead purge QUEUE [--force]
    taquba jobs QUEUE [--status STATUS] [--limit N]
    taquba serve ...   (taquba-server's command, when installed)

Every command takes ``--store`` and ``--db``, defaulting to the demo's store
(``./.taquba-demo``) and database (``demo``), so ``taquba inspect`` right after ``taquba demo``
shows what the demo left. The admin commands also take ``--server URL`` (or
``TAQUBA_SERVER``) and ``--token`` (or ``TAQUBA_TOKEN``): they then act through that
taquba-server's HTTP API (`_cli_remote.py`) and print the same output.

Owner check. The commands that open the store as its writer (``dead requeue``, ``dead purge``)
first read the store's owner record through a reader; while it is fresh (a live owner holds the
store) they refuse, naming the owner and its server address, and write nothing. ``--force``
opens the store anyway, fencing the owner.

Exit status: 0 on success, 1 when something failed at run time (storage, a demo check, a live
owner), 2 for bad input (an unusable store URL, a missing store, queue or
job, a bad option), 130 after SIGINT (Ctrl-C) and 143 after SIGTERM. Errors are one line on
stderr, never a traceback.

Signals. Each command runs under `trio.open_signal_receiver` for SIGINT and SIGTERM (the
command installs these handlers, the library never does): the first signal cancels the
command, whose writes in flight finish and whose store is closed as on any cancellation, then
one line says so. A second signal exits at once, without waiting for the store to close.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import signal
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, cast
from urllib.parse import unquote, urlsplit

import trio

from taquba import (
    DataError,
    InvalidState,
    JobNotFound,
    JobRecord,
    JobStatus,
    Store,
    TaqubaError,
    UsageError,
    open_queue,
    open_reader,
)
from taquba._cli_parser import build_parser
from taquba._cli_remote import RemoteQueue
from taquba._demo import (
    CHILD_COMMAND,
    DEFAULT_STORE,
    DemoError,
    DemoOptions,
    local_path,
    run_child,
    run_demo,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
    from contextlib import AbstractAsyncContextManager

    from taquba import JobPage, OwnerInfo, Queue, QueueReader, QueueStats

__all__ = ["CliError", "build_parser", "main"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_SIGINT: Final = 128 + signal.SIGINT
EXIT_SIGTERM: Final = 128 + signal.SIGTERM

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class CliError(Exception):
    """A problem the user can fix; reported as one line on stderr."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code
        """The exit status to report it with."""


# ------------------------------------------------------------------------------ stores


def _local_dir(text: str) -> str | None:
    """The directory a plain path or a well-formed ``file://`` URL names, else None."""
    text = text.strip()
    match = _SCHEME.match(text)
    if match is None or len(match.group(1)) == 1:  # no scheme, or a Windows drive letter
        return os.path.abspath(os.path.expanduser(text)) if text and "://" not in text else None
    if match.group(1).lower() != "file":
        return None
    parts = urlsplit(text)
    path = unquote(parts.path)
    if parts.netloc in ("", "localhost") and path.startswith("/") and text[5:].startswith("//"):
        return path
    return None  # malformed: Store.from_url says why


def _open_admin_store(url: str | None, db: str) -> Store:
    """The store an admin command works on; it must already hold the database ``db``."""
    text = url if url is not None else DEFAULT_STORE
    hint = " (run `taquba demo` first, or pass --store)" if url is None else ""
    directory = _local_dir(text)
    if directory is not None and not os.path.isdir(directory):
        raise CliError(f"no store at {directory}{hint}")
    store = Store.from_url(text)
    root = local_path(store)
    if root is not None and not os.path.isdir(os.path.join(root, *store.db_path(db).split("/"))):
        raise CliError(f"no database {db!r} in the store {store.url}{hint}")
    return store


def _open_admin_queue(store: Store, db: str) -> AbstractAsyncContextManager[Queue]:
    # An admin writer changes only what it is asked to: no background maintenance.
    return open_queue(store, db, flush_interval=0.01, maintenance=False)


def _open_admin_reader(store: Store, db: str) -> AbstractAsyncContextManager[QueueReader]:
    return open_reader(store, db)


class _View(Protocol):
    """What the read-only commands use: a `QueueReader`, or a `RemoteQueue`."""

    @property
    def name(self) -> str: ...
    async def list_queues(self) -> list[str]: ...
    async def stats(self, queue_name: str) -> QueueStats: ...
    async def get_job(self, job_id: str) -> JobRecord | None: ...
    async def dead_jobs(
        self, queue_name: str, *, after: str | None = ..., limit: int = ...
    ) -> list[JobRecord]: ...
    async def list_jobs(
        self, queue_name: str, status: JobStatus, *, limit: int = ...
    ) -> JobPage: ...


class _Writer(_View, Protocol):
    """What the writing commands use: a `Queue`, or a `RemoteQueue`."""

    async def requeue_dead_job(self, job: JobRecord) -> None: ...
    async def purge(self, queue_name: str, status: JobStatus) -> int: ...


@dataclass(frozen=True, slots=True)
class _Target:
    """Where an admin command acts: a store and database, or a server."""

    store: str | None
    db: str
    server: str | None = None
    token: str | None = None
    force: bool = False

    def where(self, store: Store | None) -> str:
        if self.server is not None:
            return f"server:   {self.server}"
        assert store is not None
        return f"store:    {store.url}"


@asynccontextmanager
async def _open_view(target: _Target) -> AsyncGenerator[tuple[_View, Store | None]]:
    if target.server is not None:
        remote = RemoteQueue(target.server, target.token)
        await remote.connect()
        yield remote, None
        return
    store = _open_admin_store(target.store, target.db)
    async with _open_admin_reader(store, target.db) as reader:
        yield reader, store


@asynccontextmanager
async def _open_writer(target: _Target) -> AsyncGenerator[_Writer]:
    if target.server is not None:
        remote = RemoteQueue(target.server, target.token)
        await remote.connect()
        yield remote
        return
    store = _open_admin_store(target.store, target.db)
    await _check_owner(store, target.db, force=target.force)
    async with _open_admin_queue(store, target.db) as queue:
        yield queue


def _refusal(info: OwnerInfo, store: Store, db: str) -> str:
    through = (
        f"run the command through it with --server {info.address}"
        if info.address
        else "run the command through its taquba-server with --server URL"
    )
    return (
        f"a live owner ({info.describe()}) holds the database {db!r} of the store {store.url}: "
        f"opening it here would fence (stop) that process. Stop it, or {through} "
        "(--force opens the store anyway and fences it)"
    )


async def _check_owner(store: Store, db: str, *, force: bool) -> None:
    """Refuse (`CliError`) while a live owner holds the database, unless ``force``."""
    async with _open_admin_reader(store, db) as reader:
        try:
            info = await reader.owner()
        except DataError as exc:
            if not force:
                raise CliError(
                    f"the owner record of the database {db!r} in {store.url} is unreadable "
                    f"({exc}): whether a live owner holds it is unknown. Stop any process "
                    "using the store and pass --force, or use --server URL",
                    EXIT_FAILURE,
                ) from None
            _warn(f"the owner record is unreadable ({exc}); --force: opening the store anyway")
            return
    if info is None:
        return
    if info.is_fresh():
        if not force:
            raise CliError(_refusal(info, store, db), EXIT_FAILURE)
        _warn(f"--force: fencing the live owner ({info.describe()}); it stops with Fenced")
        return
    seen = _when(info.heartbeat_at)
    _warn(f"the last owner ({info.describe()}) stopped its heartbeat at {seen}; taking over")


def _warn(text: str) -> None:
    sys.stderr.write(f"taquba: {text}\n")
    sys.stderr.flush()


async def _require_queue(queue: _View, name: str) -> None:
    names = await queue.list_queues()
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise CliError(f"no queue {name!r} in database {queue.name!r} (queues: {known})")


# ------------------------------------------------------------------------------ output


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _preview(payload: bytes, width: int = 60) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(payload)} bytes>"
    text = " ".join(text.split())
    if not text.isprintable():
        return f"<{len(payload)} bytes>"
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(
    out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: int = 0
) -> None:
    """Print aligned columns; the ``right`` last columns are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    first_right = len(headers) - right
    for row in [headers, *rows]:
        cells = [
            cell.rjust(w) if i >= first_right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")


# ------------------------------------------------------------------------------ commands


async def _inspect(out: TextIO, target: _Target) -> int:
    async with _open_view(target) as (reader, store):
        names = await reader.list_queues()
        stats = [await reader.stats(name) for name in names]
        db = reader.name
    out.write(f"{target.where(store)}\ndatabase: {db}\n")
    if not stats:
        out.write("no queues yet\n")
        return EXIT_OK
    out.write("\n")
    fields = ("pending", "scheduled", "claimed", "done", "dead")
    rows = [[s.queue_name, *(str(getattr(s, f)) for f in fields)] for s in stats]
    _table(out, ["queue", *fields], rows, right=len(fields))
    return EXIT_OK


def _dead_row(job: JobRecord) -> list[str]:
    return [
        job.id,
        f"{job.attempts}/{job.max_attempts}",
        _when(job.failed_at),
        " ".join((job.last_error or "-").split()),
    ]


async def _dead_list(out: TextIO, target: _Target, name: str, limit: int) -> int:
    async with _open_view(target) as (reader, _):
        await _require_queue(reader, name)
        total = (await reader.stats(name)).dead
        jobs = await reader.dead_jobs(name, limit=limit)
    if not jobs:
        out.write(f"the dead-letter inbox of {name!r} is empty\n")
        return EXIT_OK
    shown = f", showing {len(jobs)}" if len(jobs) < total else ""
    out.write(f"{total} dead jobs in {name!r}{shown}:\n")
    _table(out, ["id", "attempts", "failed at", "last error"], [_dead_row(j) for j in jobs])
    return EXIT_OK


_SKIPPED_NOTE: Final = "no longer dead (requeued or deleted meanwhile)"


async def _dead_requeue(
    out: TextIO, target: _Target, name: str, job_id: str | None, every: bool
) -> int:
    requeued = skipped = 0
    total = 0

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    async def requeue(queue: _Writer, job: JobRecord) -> None:
        nonlocal requeued, skipped
        done = requeued + skipped + 1
        try:
            await queue.requeue_dead_job(job)
        except (InvalidState, JobNotFound):
            skipped += 1
            say(f"skipped {job.id} ({done}/{total}): {_SKIPPED_NOTE}")
        else:
            requeued += 1
            say(f"requeued {job.id} ({done}/{total})")

    async with _open_writer(target) as queue:
        await _require_queue(queue, name)
        try:
            if every:
                total = (await queue.stats(name)).dead
                if total:
                    say(f"requeueing {total} dead job(s) of {name!r}")
                after: str | None = None
                while batch := await queue.dead_jobs(name, after=after, limit=100):
                    for job in batch:
                        await requeue(queue, job)
                    after = batch[-1].id
            else:
                assert job_id is not None
                job = await queue.get_job(job_id)
                if job is None or job.queue_name != name:
                    raise CliError(f"no job {job_id!r} in queue {name!r}")
                if job.status is not JobStatus.DEAD:
                    raise CliError(f"job {job_id!r} is {job.status.value}, not dead")
                total = 1
                await requeue(queue, job)
        except TaqubaError:
            if requeued or skipped:  # say what was done before the failure
                summary = _summary(requeued, skipped, name)
                say(f"stopped after {requeued + skipped} of {total}: {summary}")
            raise
    if not requeued and not skipped:
        say(f"the dead-letter inbox of {name!r} is empty: nothing to requeue")
        return EXIT_OK
    say(_summary(requeued, skipped, name))
    return EXIT_OK


def _summary(requeued: int, skipped: int, name: str) -> str:
    text = (
        f"{requeued} job(s) pending again with attempts reset; they run when a worker next "
        f"serves {name!r}"
    )
    if skipped:
        text += f"; skipped {skipped} job(s) {_SKIPPED_NOTE}"
    return text


def _job_row(job: JobRecord) -> list[str]:
    moment = {
        JobStatus.PENDING: job.enqueued_at,
        JobStatus.SCHEDULED: job.run_at,
        JobStatus.CLAIMED: job.claimed_at,
        JobStatus.DONE: job.completed_at,
        JobStatus.DEAD: job.failed_at,
    }[job.status]
    return [
        job.id,
        str(job.priority),
        f"{job.attempts}/{job.max_attempts}",
        _when(moment),
        _preview(job.payload),
    ]


_MOMENT_HEADER: Final = {
    JobStatus.PENDING: "enqueued",
    JobStatus.SCHEDULED: "due",
    JobStatus.CLAIMED: "claimed",
    JobStatus.DONE: "completed",
    JobStatus.DEAD: "failed",
}


async def _dead_purge(out: TextIO, target: _Target, name: str) -> int:
    async with _open_writer(target) as queue:
        await _require_queue(queue, name)
        removed = await queue.purge(name, JobStatus.DEAD)
    if not removed:
        out.write(f"the dead-letter inbox of {name!r} is empty: nothing to purge\n")
    else:
        out.write(f"purged {removed} dead job(s) of {name!r}\n")
    return EXIT_OK


async def _jobs(out: TextIO, target: _Target, name: str, status: JobStatus, limit: int) -> int:
    async with _open_view(target) as (reader, _):
        await _require_queue(reader, name)
        page = await reader.list_jobs(name, status, limit=limit)
    if not page.jobs:
        out.write(f"no {status.value} jobs in {name!r}\n")
        return EXIT_OK
    more = " (more exist: raise --limit)" if page.next_cursor is not None else ""
    out.write(f"{len(page.jobs)} {status.value} jobs in {name!r}{more}:\n")
    headers = ["id", "priority", "attempts", _MOMENT_HEADER[status], "payload"]
    _table(out, headers, [_job_row(job) for job in page.jobs])
    return EXIT_OK


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
    url: str | None = args.store
    db: str = args.db
    if command == "demo":
        return _demo(args)
    if command == CHILD_COMMAND:
        return _run(run_child, url or DEFAULT_STORE, db, args.count)
    server: str | None = (
        args.server or args.global_server or os.environ.get("TAQUBA_SERVER") or None
    )
    token: str | None = args.token or args.global_token or os.environ.get("TAQUBA_TOKEN") or None
    target = _Target(url, db, server=server, token=token, force=getattr(args, "force", False))
    if command == "inspect":
        return _run(_inspect, out, target)
    if command == "jobs":
        return _run(_jobs, out, target, args.queue, JobStatus(args.status), args.limit)
    if args.action == "list":
        return _run(_dead_list, out, target, args.queue, args.limit)
    if args.action == "purge":
        return _run(_dead_purge, out, target, args.queue)
    return _run(_dead_requeue, out, target, args.queue, args.job_id, args.all)


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
