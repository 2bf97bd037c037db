"""Read-only access to a queue database, safe next to a running writer."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _views as views
from ._adapter import Reader
from ._errors import InvalidArgument, StorageUnavailable
from ._ids import validate_job_id
from ._owner import OwnerInfo, decode_owner, owner_key
from ._payloads import Payloads
from ._store import DEFAULT_DATABASE, Store
from ._validate import check_seconds

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncGenerator

    from ._records import JobAttempt, JobRecord, JobStatus, QueueStats
    from ._types import JobPage, KvPage

__all__ = ["QueueReader", "open_reader"]

_ATTEMPTS: Final = 10
_MAX_POLL_INTERVAL: Final = 86_400.0  # SlateDB refuses huge durations
"""Reads that straddle a change of the writer's state are retried this many times."""


class QueueReader:
    """Read-only access to a queue database, for dashboards, admin tools and other processes.

    Open one with `open_reader`. Unlike `open_queue`, it does not take the database over: it
    writes nothing, so a writer using the database at the same time (in this process or
    another) is neither fenced nor slowed down. It sees what the writer has made durable, a
    poll interval or so late, including claimed jobs (which a writer opening the database
    would recover to pending).

    The inspection methods match `Queue`'s. A single call is consistent (`stats` is the
    counters at one point of the writer's history); a sequence of calls is not a snapshot.
    """

    __slots__ = ("_payloads", "_reader")

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._payloads = Payloads(reader.store, reader.name)

    def __repr__(self) -> str:
        return f"<QueueReader {self.name!r} in {self.store!r}>"

    @property
    def name(self) -> str:
        """The database name inside the store."""
        return self._reader.name

    @property
    def store(self) -> Store:
        """The store the database lives in."""
        return self._reader.store

    async def list_queues(self) -> list[str]:
        """Every queue that has ever held a job, sorted by name."""
        return await views.list_queue_names(self._reader)

    async def stats(self, queue_name: str) -> QueueStats:
        """The counters of ``queue_name`` at one point of the writer's history.

        Raises:
            StorageUnavailable: the writer folded counters during every one of several reads
                (transient; try again).
        """
        keys.validate_queue_name(queue_name)
        stats_key = keys.stats_key(queue_name)
        for _ in range(_ATTEMPTS):
            base, stats = await views.read_stats(self._reader, queue_name)
            # A fold rewrites the base record and deletes the deltas it added. If the base is
            # the same after the deltas were read, no fold came between the two reads.
            if await self._reader.get(stats_key) == base:
                return stats
        raise StorageUnavailable(f"the counters of {queue_name!r} changed during every read")

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job's current record in any state, or None if it does not exist."""
        validate_job_id(job_id)
        # The reader lags the writer: a missing object may be a job just removed.
        return await self._payloads.read_job(lambda: self._locate(job_id), confirmed=False)

    async def _locate(self, job_id: str) -> tuple[bytes, bytes] | None:
        """The key and stored bytes of the job's current record, or None."""
        for _ in range(_ATTEMPTS):
            found = await views.locate(self._reader, job_id)
            if found is not None:
                return found
            if await self._reader.get(keys.index_key(job_id)) is None:
                return None
            # The job moved between the index read and the record reads: look again.
        return None

    async def get_job_history(self, job_id: str) -> list[JobAttempt] | None:
        """The job's attempt history, oldest first (see `Queue.get_job_history`), or None."""
        validate_job_id(job_id)
        for _ in range(_ATTEMPTS):
            history = await views.job_history(self._reader, job_id)
            if history is not None:
                return history
            if await self._reader.get(keys.index_key(job_id)) is None:
                return None
            # The job moved between the index read and the record reads: look again.
        return None

    async def list_jobs(
        self, queue_name: str, status: JobStatus, *, cursor: bytes | None = None, limit: int = 100
    ) -> JobPage:
        """One page of the jobs of ``queue_name`` in ``status``, in `Queue.list_jobs` order."""
        page = await views.list_jobs_page(self._reader, queue_name, status, cursor, limit)
        return await self._payloads.read_page(page, self._locate, confirmed=False)

    async def dead_jobs(
        self, queue_name: str, *, after: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Dead-lettered jobs of ``queue_name`` in id order, starting after the id ``after``."""
        jobs = await views.dead_jobs(self._reader, queue_name, after, limit)
        return await self._payloads.read_jobs(jobs, self._locate, confirmed=False)

    async def owner(self) -> OwnerInfo | None:
        """The owner record: the process holding the database's writer, or None.

        None when no writer has the database open (or the last one closed it cleanly). A
        record whose owner was killed stays until the next writer opens the database: check
        `OwnerInfo.is_fresh` to tell a live owner from a dead one.

        Raises:
            DataError: the record cannot be decoded (whether an owner is alive is unknown).
        """
        raw = await self._reader.get(owner_key())
        return decode_owner(raw) if raw is not None else None

    async def kv_get(self, key: bytes) -> bytes | None:
        """The value stored under ``key`` in the user namespace, or None."""
        return await self._reader.get(keys.user_key(views.check_kv_key(key)))

    async def kv_scan(
        self, prefix: bytes = b"", *, cursor: bytes | None = None, limit: int = 100
    ) -> KvPage:
        """Entries of the user namespace whose keys start with ``prefix``, in key order."""
        return await views.kv_scan_page(self._reader, prefix, cursor, limit)


@asynccontextmanager
async def open_reader(
    store: Store | str | os.PathLike[str],
    name: str = DEFAULT_DATABASE,
    *,
    poll_interval: float = 1.0,
) -> AsyncGenerator[QueueReader]:
    """Open the existing queue database ``name`` in ``store`` read-only.

        async with taquba.open_reader("s3://bucket/app") as reader:
            print(await reader.stats("emails"))

    Args:
        store: a `Store`, or a URL/path for `Store.from_url`.
        name: the database name inside the store.
        poll_interval: seconds between the reader's checks for the writer's new state
            (finite, positive, at most a day; `InvalidArgument` otherwise).

    Raises:
        DatabaseNotFound: the store holds no database ``name`` (a reader never creates one).
        StorageUnavailable: the store could not be reached in bounded time.
    """
    if not isinstance(store, Store):
        store = Store.from_url(store)
    keys.validate_queue_name(name)
    poll_interval = check_seconds("poll_interval", poll_interval, positive=True)
    if poll_interval > _MAX_POLL_INTERVAL:
        raise InvalidArgument(
            "poll_interval", poll_interval, f"must be at most {_MAX_POLL_INTERVAL:g} seconds"
        )
    reader = await Reader.open(store, name, poll_interval=poll_interval)
    try:
        yield QueueReader(reader)
    finally:
        await reader.close()
