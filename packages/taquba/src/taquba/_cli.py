"""The ``taquba`` command: the demo and small administration commands.

::

    taquba demo [--store URL] [--jobs N] [--workers N] [--keep]
    taquba inspect [--store URL] [--db NAME]
    taquba dead list QUEUE [--limit N]
    taquba dead requeue QUEUE (JOB_ID | --all)
    taquba jobs QUEUE [--status STATUS] [--limit N]

Every command takes ``--store`` and ``--db``, defaulting to the demo's store
(``./.taquba-demo``) and database (``demo``), so ``taquba inspect`` right after ``taquba demo``
shows what the demo left. Exit status: 0 on success, 1 when something failed at run time
(storage, a demo check), 2 for bad input (an unusable store URL, a missing store, queue or
job, a bad option), 130 after SIGINT (Ctrl-C) and 143 after SIGTERM. Errors are one line on
stderr, never a traceback.

Signals. Each command runs under `trio.open_signal_receiver` for SIGINT and SIGTERM (the
command installs these handlers, the library never does): the first signal cancels the
command, whose writes in flight finish and whose store is closed as on any cancellation, then
one line says so. A second signal exits at once, without waiting for the store to close.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TextIO, cast
from urllib.parse import unquote, urlsplit

import trio

from taquba import (
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
    from collections.abc import Awaitable, Callable, Sequence
    from contextlib import AbstractAsyncContextManager

    from taquba import Queue, QueueReader

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


async def _require_queue(queue: Queue | QueueReader, name: str) -> None:
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


async def _inspect(out: TextIO, url: str | None, db: str) -> int:
    store = _open_admin_store(url, db)
    async with _open_admin_reader(store, db) as reader:
        names = await reader.list_queues()
        stats = [await reader.stats(name) for name in names]
    out.write(f"store:    {store.url}\ndatabase: {db}\n")
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


async def _dead_list(out: TextIO, url: str | None, db: str, name: str, limit: int) -> int:
    store = _open_admin_store(url, db)
    async with _open_admin_reader(store, db) as reader:
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
    out: TextIO, url: str | None, db: str, name: str, job_id: str | None, every: bool
) -> int:
    store = _open_admin_store(url, db)
    requeued = skipped = 0
    total = 0

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    async def requeue(queue: Queue, job: JobRecord) -> None:
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

    async with _open_admin_queue(store, db) as queue:
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


async def _jobs(
    out: TextIO, url: str | None, db: str, name: str, status: JobStatus, limit: int
) -> int:
    store = _open_admin_store(url, db)
    async with _open_admin_reader(store, db) as reader:
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
    if command == "inspect":
        return _run(_inspect, out, url, db)
    if command == "jobs":
        return _run(_jobs, out, url, db, args.queue, JobStatus(args.status), args.limit)
    if args.action == "list":
        return _run(_dead_list, out, url, db, args.queue, args.limit)
    return _run(_dead_requeue, out, url, db, args.queue, args.job_id, args.all)


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
    args = build_parser().parse_args(argv)
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
