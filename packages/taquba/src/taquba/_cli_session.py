"""The ``taquba`` command's session: where a command acts (a store, or a server) and how.

`CliSession` opens what a command reads or writes: a `QueueReader` or a `Queue` on the store
(the writer only after the owner check: while a live owner holds the database it refuses and
names it, unless ``--force``), or a `RemoteQueue` through a taquba-server (``--server URL``).
It also carries the output: text, or one JSON document with ``--json``. The built-in
commands and the plugins of the ``taquba.cli`` entry-point group (`CliCommands`) share it;
`taquba.cli` is the public face of this module.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, TypeAlias
from urllib.parse import unquote, urlsplit

from taquba._demo import DEFAULT_STORE, local_path
from taquba._errors import DataError, UsageError
from taquba._queue import open_queue
from taquba._reader import open_reader
from taquba._store import DEFAULT_DATABASE, Store

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping
    from contextlib import AbstractAsyncContextManager

    from taquba._owner import OwnerInfo
    from taquba._queue import Queue
    from taquba._reader import QueueReader
    from taquba._records import JobAttempt, JobRecord, JobStatus, QueueStats
    from taquba._types import CancelOutcome, EnqueueResult, JobPage, KvPage, WakeOutcome

__all__ = [
    "CliCommands",
    "CliError",
    "CliReader",
    "CliSession",
    "CliWriter",
    "CommandHandler",
    "attempt_json",
    "job_json",
]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_HANDLER: Final = "taquba_handler"


class CliError(UsageError):
    """A problem the user of the ``taquba`` command can fix; one line on stderr.

    Args:
        message: what went wrong and what to do.
        code: the exit status (2, bad input, by default; 1 for a run-time refusal).
    """

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        """Build it with its message and exit status."""
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


_OLD_DEMO_DATABASE: Final = "demo"


def open_admin_store(url: str | None, db: str) -> Store:
    """The store an admin command works on; it must already hold the database ``db``."""
    text = url if url is not None else DEFAULT_STORE
    hint = " (run `taquba demo` first, or pass --store)" if url is None else ""
    directory = _local_dir(text)
    if directory is not None and not os.path.isdir(directory):
        raise CliError(f"no store at {directory}{hint}")
    store = Store.from_url(text)
    root = local_path(store)
    if root is not None and not os.path.isdir(os.path.join(root, *store.db_path(db).split("/"))):
        if db == DEFAULT_DATABASE and os.path.isdir(
            os.path.join(root, *store.db_path(_OLD_DEMO_DATABASE).split("/"))
        ):
            hint += (
                f" (it holds the database {_OLD_DEMO_DATABASE!r}, the demo's in earlier "
                f"releases: pass --db {_OLD_DEMO_DATABASE})"
            )
        raise CliError(f"no database {db!r} in the store {store.url}{hint}")
    return store


def _open_admin_queue(store: Store, db: str) -> AbstractAsyncContextManager[Queue]:
    # An admin writer changes only what it is asked to: no background maintenance.
    return open_queue(store, db, flush_interval=0.01, maintenance=False)


def _open_admin_reader(store: Store, db: str) -> AbstractAsyncContextManager[QueueReader]:
    return open_reader(store, db)


class CliReader(Protocol):
    """What a command reads through: a `QueueReader` on the store, or a taquba-server.

    These are the `QueueReader` methods of the same names; `CliSession.open_reader` yields one.
    """

    @property
    def name(self) -> str:
        """The database name."""
        ...

    async def list_queues(self) -> list[str]:
        """Every queue that has ever held a job, sorted by name."""
        ...

    async def stats(self, queue_name: str) -> QueueStats:
        """The counters of ``queue_name``."""
        ...

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job's current record, or None."""
        ...

    async def get_job_history(self, job_id: str) -> list[JobAttempt] | None:
        """The job's attempt history, oldest first, or None if no job has this id."""
        ...

    async def dead_jobs(
        self, queue_name: str, *, after: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Dead jobs of ``queue_name`` in id order, after the id ``after``."""
        ...

    async def list_jobs(self, queue_name: str, status: JobStatus, *, limit: int = 100) -> JobPage:
        """The first page of the jobs of ``queue_name`` in ``status``."""
        ...

    async def kv_get(self, key: bytes) -> bytes | None:
        """The value of the user-KV entry ``key``, or None."""
        ...

    async def kv_scan(
        self, prefix: bytes = b"", *, cursor: bytes | None = None, limit: int = 100
    ) -> KvPage:
        """One page of the user-KV entries whose keys start with ``prefix``."""
        ...


class CliWriter(CliReader, Protocol):
    """What a command writes through: a `Queue` on the store, or a taquba-server.

    These are the `Queue` methods of the same names; `CliSession.open_writer` yields one.
    """

    async def requeue_dead_job(self, job: JobRecord) -> None:
        """Make the dead ``job`` pending again."""
        ...

    async def purge(self, queue_name: str, status: JobStatus) -> int:
        """Delete every job of ``queue_name`` in ``status`` (dead or done); return how many."""
        ...

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job."""
        ...

    async def wake_scheduled(self, job_id: str, payload: bytes | None = None) -> WakeOutcome:
        """Make a scheduled job due now, with ``payload`` on its record."""
        ...

    async def enqueue(
        self,
        queue_name: str,
        payload: bytes,
        *,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | None = None,
        dedup_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_attempts: int | None = None,
        job_id: str | None = None,
    ) -> EnqueueResult:
        """Add a job to ``queue_name``."""
        ...

    async def kv_compare_and_set(
        self, key: bytes, expected: bytes | None, new: bytes | None
    ) -> bool:
        """Replace the user-KV entry ``key`` if it equals ``expected``; whether it did."""
        ...


class CliSession:
    """Where a ``taquba`` command acts, and where its output goes.

    Built by the command from its options (``--store``, ``--db``, ``--server``, ``--token``,
    ``--force``, ``--json``) and passed to every command handler, the plugins' included.

    Args:
        store: the store URL or directory (None: the default, ``./.taquba-demo``).
        db: the database name inside the store.
        server: act through the taquba-server at this URL instead of the store.
        token: the bearer token for ``server``.
        force: open the store as its writer even while a live owner holds it (fencing it).
        json: print one JSON document instead of text.
        out: where the output goes (default: ``sys.stdout``).
    """

    def __init__(
        self,
        store: str | None = None,
        db: str = DEFAULT_DATABASE,
        *,
        server: str | None = None,
        token: str | None = None,
        force: bool = False,
        json: bool = False,
        out: TextIO | None = None,
    ) -> None:
        """Record where the command acts; nothing is opened until `open_reader`."""
        self.store = store
        """The store URL or directory, None for the default."""
        self.db = db
        """The database name inside the store."""
        self.server = server
        """The taquba-server URL, or None to work on the store directly."""
        self.token = token
        """The bearer token for ``server``."""
        self.force = force
        """Whether a writer fences a live owner instead of refusing."""
        self.json = json
        """Whether the command prints one JSON document (``--json``)."""
        self.out: TextIO = out if out is not None else sys.stdout
        """Where the output goes."""
        self.opened_store: Store | None = None
        """The store the last `open_reader` or `open_writer` opened (None through a server)."""

    @property
    def remote(self) -> bool:
        """Whether the command acts through a taquba-server."""
        return self.server is not None

    def where(self) -> str:
        """``store: URL`` or ``server: URL``, for a text header."""
        if self.server is not None:
            return f"server:   {self.server}"
        store = self.opened_store
        return f"store:    {store.url if store is not None else self.store}"

    def where_json(self) -> dict[str, str | None]:
        """The ``store`` and ``server`` keys of a JSON document."""
        store = self.opened_store
        return {"store": store.url if store is not None else None, "server": self.server}

    @asynccontextmanager
    async def open_reader(self) -> AsyncGenerator[CliReader]:
        """Open the database read-only (safe next to a live owner), or connect to the server.

        Raises:
            CliError: no such store or database.
        """
        if self.server is not None:
            remote = _remote(self.server, self.token)
            await remote.connect()
            yield remote
            return
        store = open_admin_store(self.store, self.db)
        self.opened_store = store
        async with _open_admin_reader(store, self.db) as reader:
            yield reader

    @asynccontextmanager
    async def open_writer(self) -> AsyncGenerator[CliWriter]:
        """Open the database as its writer (after the owner check), or connect to the server.

        The writer runs no background maintenance: it changes only what it is asked to.

        Raises:
            CliError: no such store or database, or a live owner holds it (without ``force``).
        """
        if self.server is not None:
            remote = _remote(self.server, self.token)
            await remote.connect()
            yield remote
            return
        store = open_admin_store(self.store, self.db)
        self.opened_store = store
        await _check_owner(store, self.db, force=self.force)
        async with _open_admin_queue(store, self.db) as queue:
            yield queue

    def say(self, text: str) -> None:
        """Print a line of text output (nothing with ``--json``)."""
        if not self.json:
            self.out.write(text + "\n")
            self.out.flush()

    def emit(self, document: Mapping[str, Any]) -> None:
        """Print ``document`` as the command's one JSON document (only with ``--json``)."""
        if self.json:
            self.out.write(json.dumps(document, sort_keys=True) + "\n")
            self.out.flush()


CommandHandler: TypeAlias = Callable[[argparse.Namespace, CliSession], Awaitable[int]]
"""A command's handler: ``await handler(args, session)`` returns the exit status."""


def _remote(server: str, token: str | None) -> Any:
    from taquba._cli_remote import RemoteQueue

    return RemoteQueue(server, token)


class CliCommands:
    """What a ``taquba.cli`` entry-point plugin receives to add its commands.

    A plugin is a function ``register(commands: CliCommands) -> None`` named by an entry point
    of the group ``taquba.cli`` (``[project.entry-points."taquba.cli"]`` in its pyproject). It
    adds a command with `add_command`, gives the parsers of its actions the shared options
    (`reader_options` or `writer_options` as ``parents=``), and names each action's handler
    with `set_handler`. The handler runs under the command's signal handling and error
    reporting: `taquba.UsageError` is bad input (exit 2), other `taquba.TaqubaError` a
    run-time failure (exit 1)::

        def register(commands: taquba.cli.CliCommands) -> None:
            cron = commands.add_command("cron", help="...", description="...")
            actions = cron.add_subparsers(dest="action", required=True)
            listing = actions.add_parser("list", parents=[commands.reader_options])
            commands.set_handler(listing, list_schedules)

    Args:
        subparsers: the ``add_subparsers()`` action of the ``taquba`` parser.
        reader_options: the parent parser of the read-only commands' options.
        writer_options: the parent parser of the writing commands' options.
    """

    def __init__(
        self,
        subparsers: Any,
        reader_options: argparse.ArgumentParser,
        writer_options: argparse.ArgumentParser,
    ) -> None:
        """Wrap the ``taquba`` parser's commands."""
        self._subparsers = subparsers
        self.reader_options = reader_options
        """Parent parser: ``--store``, ``--db``, ``--server``, ``--token``, ``--json``."""
        self.writer_options = writer_options
        """Parent parser: the `reader_options` and ``--force``."""

    def add_command(self, name: str, *, help: str, description: str) -> argparse.ArgumentParser:  # noqa: A002
        """Add the command ``taquba NAME``; return its parser.

        Raises:
            taquba.UsageError: a command with this name exists.
        """
        existing: dict[str, argparse.ArgumentParser] = self._subparsers.choices
        if name in existing:
            raise UsageError(f"the taquba command {name!r} exists already")
        parser: argparse.ArgumentParser = self._subparsers.add_parser(
            name, help=help, description=description
        )
        return parser

    @staticmethod
    def set_handler(
        parser: argparse.ArgumentParser,
        handler: CommandHandler,
    ) -> None:
        """Run ``await handler(args, session)`` when ``parser``'s command is given.

        The handler returns the exit status (0 on success).
        """
        parser.set_defaults(**{_HANDLER: handler})


def handler_of(
    args: argparse.Namespace,
) -> CommandHandler | None:
    """The handler `CliCommands.set_handler` gave the parsed command, if any."""
    return getattr(args, _HANDLER, None)


def job_json(job: JobRecord) -> dict[str, Any]:
    """A job in the HTTP API's ``Job`` form (``payload`` in base64; times in ms or null).

    The keys are stable: ``--json`` output and the taquba-server API share them.
    """
    return {
        "id": job.id,
        "queue_name": job.queue_name,
        "payload": base64.b64encode(job.payload).decode("ascii"),
        "status": job.status.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "enqueued_at": job.enqueued_at,
        "headers": dict(job.headers),
        "claimed_at": job.claimed_at,
        "run_at": job.run_at,
        "last_error": job.last_error,
        "dedup_key": job.dedup_key,
        "completed_at": job.completed_at,
        "failed_at": job.failed_at,
        "cancel_requested": job.cancel_requested,
        "woken_at": job.woken_at,
        "wake_payload": (
            base64.b64encode(job.wake_payload).decode("ascii")
            if job.wake_payload is not None
            else None
        ),
        "history_size": job.history_size,
        "payload_ref": job.payload_ref,
    }


def attempt_json(attempt: JobAttempt) -> dict[str, Any]:
    """An attempt-history entry in the HTTP API's ``JobAttempt`` form (times in ms or null)."""
    return {
        "attempt": attempt.attempt,
        "outcome": attempt.outcome.value,
        "recorded_at": attempt.recorded_at,
        "claimed_at": attempt.claimed_at,
        "error": attempt.error,
    }


def stats_json(stats: QueueStats) -> dict[str, Any]:
    """A queue's counters as the HTTP API's ``QueueStats`` form."""
    return {
        "queue_name": stats.queue_name,
        "pending": stats.pending,
        "scheduled": stats.scheduled,
        "claimed": stats.claimed,
        "done": stats.done,
        "dead": stats.dead,
        "quarantined": stats.quarantined,
    }


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
            warn(f"the owner record is unreadable ({exc}); --force: opening the store anyway")
            return
    if info is None:
        return
    if info.is_fresh():
        if not force:
            raise CliError(_refusal(info, store, db), EXIT_FAILURE)
        warn(f"--force: fencing the live owner ({info.describe()}); it stops with Fenced")
        return
    seen = when(info.heartbeat_at)
    warn(f"the last owner ({info.describe()}) stopped its heartbeat at {seen}; taking over")


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def warn(text: str) -> None:
    sys.stderr.write(f"taquba: {text}\n")
    sys.stderr.flush()
