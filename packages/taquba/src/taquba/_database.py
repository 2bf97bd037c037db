"""Databases, readers and transactions: the typed SlateDB API the rest of taquba uses.

`Database` (the single writer of one database), `Reader` (a follower in any process),
`Transaction` (snapshot isolation) and `Snapshot` (a read-only consistent view) await the
binding directly in trio through `taquba._binding.call` and raise only taquba's errors
(`taquba._dberrors`). `run_transaction` retries a transaction body on write conflicts.

Cancellation. Reads are cancellable. Writes (commits, puts, deletes) and their durability waits
run shielded, bounded by the database's commit deadline (`Database.open`, by default
`default_commit_deadline`: longer than the store's own retry budget, so storage gives up and
answers before the deadline does); a write that fails or times out has an unknown outcome, so
callers reconcile by reading back.

Interrupts. Everything here is KI-protected (see `taquba._interrupts`). Writes and `close`
hold a `KeyboardInterrupt` that trio delivers into them until they finish.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Protocol, TypeVar, cast

import slatedb.uniffi as _sdb
import trio

from taquba import _failpoints
from taquba._binding import LARGE_VALUE_BYTES, call, put_large
from taquba._dberrors import (
    CLOSE_REASON_NAMES,
    CloseReasonName,
    TransactionConflict,
    closed_error,
    map_errors,
)
from taquba._dbfaults import after_applying, before_applying, read_fault, write_fault
from taquba._dbscan import Scanner
from taquba._errors import (
    DatabaseNotFound,
    DataError,
    StorageError,
    StorageUnavailable,
    TaqubaError,
    UsageError,
)
from taquba._interrupts import hold_interrupts, protect, wait_holding
from taquba._objectstore import object_store_of
from taquba._validate import check_seconds
from taquba._walflush import WalFlusher, default_linger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator, Mapping

    from taquba._store import Store

__all__ = [
    "CLOSE_DEADLINE",
    "OBJECT_STORE_REQUEST_BUDGET",
    "READER_BLOCK_CACHE_BYTES",
    "READER_META_CACHE_BYTES",
    "STORAGE_SETTINGS",
    "WRITER_BLOCK_CACHE_BYTES",
    "WRITER_META_CACHE_BYTES",
    "CommitListener",
    "Database",
    "Reader",
    "Snapshot",
    "Transaction",
    "check_commit_deadline",
    "default_commit_deadline",
    "run_transaction",
    "writer_settings",
]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

OBJECT_STORE_REQUEST_BUDGET: Final = 210.0
"""Seconds one object-store request may take inside SlateDB before it fails: the HTTP client's
own retries stop starting new attempts after 180 s (``object_store``'s default
``retry_timeout``), and the last attempt may run its 30 s request timeout."""

_SLATEDB_RETRY_DELAY_MAX: Final = 1.0
"""SlateDB's retrying object store backs off at most 1 s between its retries."""

_COMMIT_DEADLINE_MARGIN: Final = 30.0
"""Slack on top of the retry budget for WAL flush scheduling and queueing."""


def default_commit_deadline(max_retries: int) -> float:
    """The default commit deadline for a store with `max_retries` object-store retries.

    A write's durability wait covers one WAL flush: an object-store PUT that SlateDB retries
    `max_retries` times (at most 1 s apart), each attempt bounded by
    `OBJECT_STORE_REQUEST_BUDGET`. The deadline exceeds that budget by a margin, so a failing
    store answers (`StorageUnavailable`, nothing hidden) before the deadline declares an
    outcome unknown. With the default 3 retries: 4 x 210 s + 3 x 1 s = 843 s, plus 30 s.
    """
    budget = (max_retries + 1) * OBJECT_STORE_REQUEST_BUDGET
    return budget + max_retries * _SLATEDB_RETRY_DELAY_MAX + _COMMIT_DEADLINE_MARGIN


def check_commit_deadline(seconds: object) -> float:
    """Return `seconds` as a float if it is a finite, positive number of seconds.

    Raises:
        InvalidArgument: anything else.
    """
    return check_seconds("commit_deadline", seconds, positive=True)


_GC_INTERVAL: Final = '"10s"'
_GC_MIN_AGE: Final = '"30s"'

STORAGE_SETTINGS: Final[Mapping[str, str]] = MappingProxyType(
    {
        # WAL objects become garbage only once the memtable holding their writes is uploaded as
        # an L0 SST, after 4096 WAL flushes (SlateDB refuses fewer) or `l0_sst_size_bytes` of
        # writes. Durability on demand writes one small WAL object per flush, so the flush count
        # bounds the WAL's objects; 16 MiB (SlateDB: 64 MiB) bounds its bytes.
        "l0_sst_size_bytes": str(16 * 1024 * 1024),
        # The garbage collector runs every 10 s (SlateDB: 10 min) and deletes what has been
        # garbage for 30 s (SlateDB: 5 min): at hundreds of WAL flushes a second, SlateDB's
        # defaults keep a quarter of a million dead objects. 30 s still outlasts a reader's
        # manifest poll (1 s) many times over. Fence objects (zero bytes, one per writer open)
        # are collected too: SlateDB's default only logs them (dry run), so they pile up forever.
        "garbage_collector_options.wal_options.interval": _GC_INTERVAL,
        "garbage_collector_options.wal_options.min_age": _GC_MIN_AGE,
        "garbage_collector_options.wal_fence_options.interval": _GC_INTERVAL,
        "garbage_collector_options.wal_fence_options.min_age": _GC_MIN_AGE,
        "garbage_collector_options.manifest_options.interval": _GC_INTERVAL,
        "garbage_collector_options.manifest_options.min_age": _GC_MIN_AGE,
        "garbage_collector_options.compacted_options.interval": _GC_INTERVAL,
        "garbage_collector_options.compacted_options.min_age": _GC_MIN_AGE,
        "garbage_collector_options.compactions_options.interval": _GC_INTERVAL,
        "garbage_collector_options.compactions_options.min_age": _GC_MIN_AGE,
        "garbage_collector_options.wal_fence_options.dry_run": "false",
        # Every compaction leaves a checkpoint on the manifest it replaced, so that a reader
        # still on that manifest can finish reading the SSTs the compaction removed; the
        # collector keeps those SSTs until the checkpoint expires. SlateDB's 15 minutes made a
        # store under steady load grow by every SST compacted away in the last 15 minutes
        # (about 0.1 MiB/s at 500 jobs/s: 13 to 68.5 MiB over a 10-minute soak). 30 s, like the
        # collector's minimum age, still outlasts a reader's 1 s manifest poll many times.
        "compactor_options.checkpoint_lifetime": '"30s"',
        # Tombstones (acked jobs, moved index entries) are dropped only by a compaction into
        # the last (oldest) sorted run. The size-tiered scheduler merges sorted runs only
        # once `min_compaction_sources` of similar size (within 4x) exist: with SlateDB's 4,
        # a queue's runs of tombstones piled up until there were four, then were dropped.
        # With 2, a new run merges into the last one (the live data, small) at the next
        # poll; with a large backlog the runs still tier (within 4x), so the tombstones kept
        # stay within a small multiple of the live data.
        "compactor_options.scheduler_options.min_compaction_sources": '"2"',
    }
)
"""SlateDB settings taquba sets on every database it opens (dotted key: JSON value), chosen
for queue workloads so that storage comes back: see "Storage" in docs/performance.md for the
measured growth. Private and not user-tunable."""


def writer_settings(
    *, flush_interval: float | None, manifest_poll_interval: float | None, max_retries: int
) -> _sdb.Settings:
    """The SlateDB settings `Database.open` builds.

    SlateDB's defaults, then `STORAGE_SETTINGS`, the durations given (None keeps SlateDB's)
    and finite object-store retries everywhere.

    Raises:
        UsageError: A duration that is not a positive number of seconds.
    """
    settings = _sdb.Settings.default()
    for key, value in STORAGE_SETTINGS.items():
        settings.set(key, value)
    if flush_interval is not None:
        settings.set("flush_interval", _duration(flush_interval, "flush_interval"))
    if manifest_poll_interval is not None:
        settings.set(
            "manifest_poll_interval", _duration(manifest_poll_interval, "manifest_poll_interval")
        )
    for key in (
        "object_store_max_retries",
        "compactor_options.object_store_max_retries",
        "garbage_collector_options.object_store_max_retries",
    ):
        settings.set(key, str(max_retries))
    return settings


CLOSE_DEADLINE: Final = 10.0
"""Seconds `Database.close` waits for SlateDB's shutdown before giving up on it."""

_ROLLBACK_DEADLINE: Final = 5.0


def _duration(seconds: float, what: str) -> str:
    """A SlateDB duration string; SlateDB keeps whole milliseconds."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"{what} must be a positive number of seconds, not {seconds!r}")
    return json.dumps(f"{max(1, round(seconds * 1000))}ms")


@contextlib.contextmanager
def _shielded_write(seconds: float) -> Generator[None]:
    """Shield a write from cancellation (and interrupts), bounded by the commit deadline."""
    with (
        hold_interrupts(),
        trio.CancelScope(shield=True),
        trio.move_on_after(seconds) as deadline,
    ):
        yield
    if deadline.cancelled_caught:
        raise StorageUnavailable(
            f"commit outcome unknown: no answer from storage within {seconds:g} s"
        )


class CommitListener(Protocol):
    """Told about every transaction commit of a `Database` (the queue's observers)."""

    def commit_timed(self, apply_seconds: float, durable_seconds: float | None) -> None:
        """A commit was applied in ``apply_seconds``, then made durable in ``durable_seconds``."""
        ...

    def storage_failed(self, error: StorageError) -> None:
        """A commit failed with ``error``."""
        ...

    def commit_conflicted(self) -> None:
        """A commit lost a write conflict (`run_transaction` retries it)."""
        ...


class Database(Scanner):
    """An open SlateDB database (one per queue), used from trio.

    Open it with `Database.open`; close it with `close`. Every method maps SlateDB errors to
    taquba's. Writes are shielded from cancellation; reads are not.
    """

    __slots__ = (
        "_closed",
        "_db",
        "_target",
        "commit_deadline",
        "flusher",
        "listener",
        "name",
        "store",
    )

    def __init__(
        self,
        db: _sdb.Db,
        store: Store,
        name: str,
        *,
        commit_deadline: float,
        flush_linger: float | None = None,
    ) -> None:
        self._db = db
        self._target = db
        self._closed = False
        self.listener: CommitListener | None = None
        """Told the timings of every commit and the storage errors of writes (observers)."""
        self.flusher: WalFlusher | None = WalFlusher(
            db, linger=default_linger(store.kind) if flush_linger is None else flush_linger
        )
        """Requests a WAL flush for each durable write (None: wait for SlateDB's timer)."""
        self.commit_deadline = commit_deadline
        """Seconds a write (commit, put, delete and its durability wait) may take before its
        outcome is declared unknown (`StorageUnavailable`)."""
        self.store = store
        """The store the database lives in (kept alive with it)."""
        self.name = name
        """The database name inside the store."""

    def __repr__(self) -> str:
        return f"<Database {self.name!r} in {self.store!r}>"

    @classmethod
    async def open(
        cls,
        store: Store,
        name: str,
        *,
        flush_interval: float | None = None,
        max_retries: int | None = None,
        manifest_poll_interval: float | None = None,
        open_deadline: float = 30.0,
        commit_deadline: float | None = None,
        flush_linger: float | None = None,
    ) -> Database:
        """Open (or create) the database `name` in `store` as its single writer.

        Opening fences any other writer of the same database: its next write fails with
        `Fenced`.

        Args:
            store: Where the database lives.
            name: The database name; see `Store.db_path`.
            flush_interval: Seconds between WAL flushes (the durability latency and group
                commit window); None keeps SlateDB's 100 ms.
            max_retries: Object-store retries before a call fails with `StorageUnavailable`;
                None uses `store.max_retries`. Always finite: SlateDB's default retries
                forever.
            manifest_poll_interval: Seconds between manifest reads (how soon an idle writer
                notices it was fenced); None keeps SlateDB's 1 s.
            open_deadline: Seconds the open may take before failing with
                `StorageUnavailable`.
            commit_deadline: Seconds a write and its durability wait may take before its
                outcome is declared unknown; None uses `default_commit_deadline` of the
                retries, which outlasts the store's own retry budget.
            flush_linger: Seconds a durable write's WAL flush waits for other writes to share
                it (see `taquba._walflush`); None uses the store kind's default.

        Returns:
            The open database.

        Raises:
            StorageMisconfigured: The store refused for good (`Store.check`).
            StorageUnavailable: The store did not answer in time or after the retries.
            StorageError: Another storage failure.
        """
        retries = store.max_retries if max_retries is None else max_retries
        if retries < 0:
            raise UsageError(f"max_retries must be >= 0, not {retries}")
        deadline = (
            default_commit_deadline(retries)
            if commit_deadline is None
            else check_commit_deadline(commit_deadline)
        )
        object_store = object_store_of(store)
        with map_errors():
            settings = writer_settings(
                flush_interval=flush_interval,
                manifest_poll_interval=manifest_poll_interval,
                max_retries=retries,
            )
            builder = _sdb.DbBuilder(store.db_path(name), object_store)
            builder.with_settings(settings)
            # A bounded cache (SlateDB's default holds up to 512 MiB of blocks and 128 MiB of
            # indexes and filters): every uploaded L0 SST goes into it, so under steady load
            # the process grew by the SSTs written until that bound ("Soak" in
            # docs/performance.md).
            builder.with_db_cache(
                _block_cache(WRITER_BLOCK_CACHE_BYTES, WRITER_META_CACHE_BYTES), 0
            )
        try:
            with trio.fail_after(open_deadline):
                # SlateDB reports every object-store failure as `Unavailable`, telling a
                # missing bucket or refused credentials apart only in its message; the
                # store's own check classifies them first, by exception class.
                await store.check()
                db = await call(builder.build)
        except trio.TooSlowError:
            raise StorageUnavailable(
                f"opening database {name!r} in {store.url} took longer than {open_deadline:g} s"
            ) from None
        return cls(db, store, name, commit_deadline=deadline, flush_linger=flush_linger)

    async def get(self, key: bytes) -> bytes | None:
        """Return the value of `key` (including writes not yet durable), or None."""
        if _failpoints.INSTALLED:
            await read_fault("get")
        return await call(self._db.get, key)

    async def put(self, key: bytes, value: bytes, *, durable: bool = True) -> None:
        """Write `key`; with `durable`, return only once it is in object storage (shielded)."""
        fault = write_fault("put", transaction=False, durable=durable)
        with _shielded_write(self.commit_deadline):
            await before_applying(fault)
            handle = await call(self._db.put, key, value)
            ticket = self.flusher.applied() if self.flusher is not None else 0
            await after_applying(fault)
            if durable:
                if self.flusher is not None:
                    await self.flusher.covered(ticket)
                await call(handle.await_durable)

    async def delete(self, key: bytes, *, durable: bool = True) -> None:
        """Delete `key`; with `durable`, return only once that is durable (shielded)."""
        fault = write_fault("delete", transaction=False, durable=durable)
        with _shielded_write(self.commit_deadline):
            await before_applying(fault)
            handle = await call(self._db.delete, key)
            ticket = self.flusher.applied() if self.flusher is not None else 0
            await after_applying(fault)
            if durable:
                if self.flusher is not None:
                    await self.flusher.covered(ticket)
                await call(handle.await_durable)

    async def begin(self) -> Transaction:
        """Start a transaction with snapshot isolation (write-write conflicts only)."""
        txn = await call(self._db.begin, _sdb.IsolationLevel.SNAPSHOT)
        return Transaction(
            txn, commit_deadline=self.commit_deadline, listener=self.listener, flusher=self.flusher
        )

    async def snapshot(self) -> Snapshot:
        """A read-only view of the database as of now (every write applied so far).

        Unlike a transaction it tracks no reads or writes for conflict detection, so it may
        be held for a long scan (`taquba._payload_gc` reads every job record through one).
        """
        return Snapshot(await call(self._db.snapshot))

    async def flush(self) -> None:
        """Flush the WAL buffer to object storage now."""
        await call(self._db.flush)

    def close_reason(self) -> CloseReasonName | None:
        """Why the database stopped accepting calls, or None while it is open."""
        with map_errors():
            reason = self._db.status().close_reason
        if reason is None:
            return None
        return CLOSE_REASON_NAMES.get(reason, "unknown")

    def check(self) -> None:
        """Raise `Fenced`, `QueueClosed` or `StorageFatal` if the database is no longer open."""
        reason = self.close_reason()
        if reason is not None:
            raise closed_error(reason, f"database {self.name!r} is closed ({reason})")

    async def watch(self, *, interval: float = 0.2) -> None:
        """Poll the database's status until it stops; run it as a background task.

        Returns normally when the database was closed cleanly (by `close`).

        Raises:
            Fenced: Another writer opened the database.
            StorageFatal: The database failed for good.
        """
        while True:
            reason = self.close_reason()
            if reason == "clean":
                return
            if reason is not None:
                raise closed_error(reason, f"database {self.name!r} stopped ({reason})")
            await trio.sleep(interval)

    async def close(self) -> None:
        """Shut the database down (flushing buffered writes). Idempotent.

        Runs shielded from cancellation for at most `CLOSE_DEADLINE` seconds. A fenced or
        failed database closes without error. The only exception it raises is a
        `KeyboardInterrupt` trio delivered during the shutdown, once the shutdown is over.
        """
        if self._closed:
            return
        self._closed = True
        with hold_interrupts(), trio.move_on_after(CLOSE_DEADLINE, shield=True) as scope:
            try:
                await call(self._db.shutdown)
            except StorageError as exc:
                _log.debug("shutdown of database %r: %s", self.name, exc)
        if scope.cancelled_caught:
            _log.warning(
                "shutdown of database %r did not finish within %g s", self.name, CLOSE_DEADLINE
            )


class Reader(Scanner):
    """A read-only handle on a database that a writer (in any process) may be writing.

    It follows the writer's latest durable state (SlateDB's ``FOLLOW_LATEST`` reader mode),
    polling the manifest every `poll_interval`; it writes nothing to the store, so it neither
    fences nor slows the writer. Reads are not snapshots: each call sees the state the reader
    had loaded at that moment.
    """

    __slots__ = ("_closed", "_reader", "_target", "name", "store")

    def __init__(self, reader: _sdb.DbReader, store: Store, name: str) -> None:
        self._reader = reader
        self._target = reader
        self._closed = False
        self.store = store
        """The store the database lives in."""
        self.name = name
        """The database name inside the store."""

    def __repr__(self) -> str:
        return f"<Reader {self.name!r} in {self.store!r}>"

    @classmethod
    async def open(
        cls,
        store: Store,
        name: str,
        *,
        poll_interval: float = 1.0,
        max_retries: int | None = None,
        open_deadline: float = 30.0,
    ) -> Reader:
        """Open the existing database `name` in `store` for reading.

        Raises:
            DatabaseNotFound: There is no database `name` in `store`.
            StorageUnavailable: The store did not answer in time or after the retries.
            StorageError: Another storage failure.
        """
        retries = store.max_retries if max_retries is None else max_retries
        if retries < 0:
            raise UsageError(f"max_retries must be >= 0, not {retries}")
        if not math.isfinite(poll_interval) or poll_interval <= 0:
            raise UsageError(
                f"poll_interval must be a positive number of seconds, not {poll_interval!r}"
            )
        object_store = object_store_of(store)
        with map_errors():
            builder = _sdb.DbReaderBuilder(store.db_path(name), object_store)
            # The generated variant classes are not typed as subclasses of ReaderMode.
            builder.with_reader_mode(cast("_sdb.ReaderMode", _sdb.ReaderMode.FOLLOW_LATEST()))
            builder.with_db_cache(  # its own cache: the id isolates nothing
                _block_cache(READER_BLOCK_CACHE_BYTES, READER_META_CACHE_BYTES), 0
            )
            builder.with_options(
                _sdb.ReaderOptions(
                    manifest_poll_interval_ms=max(1, round(poll_interval * 1000)),
                    checkpoint_lifetime_ms=_READER_CHECKPOINT_LIFETIME_MS,
                    max_memtable_bytes=_READER_MEMTABLE_BYTES,
                    skip_wal_replay=False,
                    object_store_max_retries=retries,
                )
            )
        try:
            with trio.fail_after(open_deadline):
                await store.check()  # classifies misconfiguration (see `Database.open`)
                reader = await call(builder.build)
        except trio.TooSlowError:
            raise StorageUnavailable(
                f"opening database {name!r} in {store.url} took longer than {open_deadline:g} s"
            ) from None
        except DataError as exc:
            if _NO_MANIFEST in str(exc):
                raise DatabaseNotFound(name, store.url) from exc
            raise
        return cls(reader, store, name)

    async def get(self, key: bytes) -> bytes | None:
        """Return the value of `key` as the reader last loaded it, or None."""
        return await call(self._reader.get, key)

    async def close(self) -> None:
        """Stop the reader's background polling (idempotent; runs even if cancelled)."""
        if self._closed:
            return
        self._closed = True
        with hold_interrupts(), trio.CancelScope(shield=True), trio.move_on_after(CLOSE_DEADLINE):
            try:
                await call(self._reader.shutdown)
            except TaqubaError as exc:
                _log.warning("closing the reader of %s: %s", self.name, exc)


def _block_cache(blocks: int, meta: int) -> _sdb.DbCache:
    """A SlateDB cache of ``blocks`` bytes of data blocks and ``meta`` of indexes and filters."""
    return _sdb.DbCache.new_split_cache(
        _sdb.DbCache.new_foyer_cache(_sdb.FoyerCacheOptions(max_capacity=blocks, shards=4)),
        _sdb.DbCache.new_foyer_cache(_sdb.FoyerCacheOptions(max_capacity=meta, shards=1)),
    )


READER_BLOCK_CACHE_BYTES: Final = 16 << 20
"""The capacity of a reader's cache of data blocks: a reader serves inspection (the dashboard,
the CLI), whose reads are few and scattered."""
READER_META_CACHE_BYTES: Final = 4 << 20
"""The capacity of a reader's cache of SST indexes and filters."""
WRITER_BLOCK_CACHE_BYTES: Final = 16 << 20
"""The capacity of a writer's cache of data blocks.

A queue reads mostly what is still in its memtables; the cache serves claims and lookups of
jobs already uploaded (a backlog), whose blocks are read about once each: draining a backlog
of 100,000 jobs ran as fast with 16 MiB as with SlateDB's 512 MiB ("Soak" in
docs/performance.md)."""
WRITER_META_CACHE_BYTES: Final = 4 << 20
"""The capacity of a writer's cache of SST indexes and filters."""
_READER_CHECKPOINT_LIFETIME_MS: Final = 10 * 60 * 1000
"""Required by the binding's reader options; unused in ``FOLLOW_LATEST`` mode."""
_READER_MEMTABLE_BYTES: Final = 64 << 20
"""How much WAL data a reader keeps in memory before it reads only what is flushed."""
_NO_MANIFEST: Final = "failed to find latest transactional object"
"""SlateDB's error text when a path holds no database (no manifest)."""


class Snapshot(Scanner):
    """A consistent, read-only view of a database at one point of its history.

    Every read (`get`, `scan`) sees the writes applied before `Database.snapshot` was
    called and none after, including writes that were not yet durable then. Freed when
    dropped (SlateDB has no close call for it).
    """

    __slots__ = ("_snapshot", "_target")

    def __init__(self, snapshot: _sdb.DbSnapshot) -> None:
        self._snapshot = snapshot
        self._target = snapshot

    async def get(self, key: bytes) -> bytes | None:
        """Return the value of `key` in the snapshot, or None."""
        if _failpoints.INSTALLED:
            await read_fault("get")
        return await call(self._snapshot.get, key)


class Transaction(Scanner):
    """A SlateDB transaction (snapshot isolation); conflicts surface at `commit`.

    Reads see the transaction's own writes. Every method is async because the binding's are.
    """

    __slots__ = (
        "_commit_deadline",
        "_completed",
        "_finish",
        "_flusher",
        "_listener",
        "_target",
        "_txn",
    )

    def __init__(
        self,
        txn: _sdb.DbTransaction,
        *,
        commit_deadline: float,
        listener: CommitListener | None = None,
        flusher: WalFlusher | None = None,
    ) -> None:
        self._txn = txn
        self._target = txn
        self._completed = False
        self._commit_deadline = commit_deadline
        self._listener = listener
        self._flusher = flusher
        self._finish: list[Callable[[], None]] | None = None

    def on_finish(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the transaction's outcome is known and it is over.

        That is when `commit` returns (applied), when it raises `TransactionConflict`
        (nothing applied), or on `rollback` before any commit. After a commit that raised
        anything else the outcome is unknown (the write may still be applied later) and the
        callback is never called.
        """
        if self._finish is None:
            self._finish = []
        self._finish.append(callback)

    def _finished(self) -> None:
        callbacks, self._finish = self._finish, None
        for callback in callbacks or ():
            callback()

    async def get(self, key: bytes) -> bytes | None:
        """Return the value of `key` as this transaction sees it, or None."""
        if _failpoints.INSTALLED:
            await read_fault("get")
        return await call(self._txn.get, key)

    async def put(self, key: bytes, value: bytes) -> None:
        """Buffer a write of `key` in the transaction.

        A value of `LARGE_VALUE_BYTES` or more is handed to SlateDB from a worker thread.
        """
        if type(value) is bytes and len(value) >= LARGE_VALUE_BYTES:
            await trio.lowlevel.checkpoint_if_cancelled()
            await put_large(self._txn, key, value)
        else:
            await call(self._txn.put, key, value)

    async def delete(self, key: bytes) -> None:
        """Buffer a deletion of `key` in the transaction."""
        await call(self._txn.delete, key)

    async def mark_read(self, keys: list[bytes]) -> None:
        """Treat `keys` as read, so a concurrent write to any of them conflicts at commit."""
        await call(self._txn.mark_read, keys)

    async def unmark_write(self, keys: list[bytes]) -> None:
        """Exclude `keys` from write-conflict detection (e.g. statistics counters)."""
        await call(self._txn.unmark_write, keys)

    async def commit(self, *, durable: bool, on_commit: Callable[[], None] | None = None) -> None:
        """Commit; with `durable`, return only once the writes are in object storage.

        Shielded from cancellation and bounded by the database's commit deadline (past it the
        outcome is unknown). After it returns or raises, the transaction is finished.
        `on_commit` is called once the commit is applied (visible to later transactions) and
        before the durability wait.

        Raises:
            TransactionConflict: Another write to a key this transaction wrote committed
                first; nothing was applied.
            StorageUnavailable: No answer within the deadline; the outcome is unknown.
            Fenced: Another writer opened the database; the outcome is unknown.
        """
        self._completed = True
        listener = self._listener
        if listener is None:
            try:
                await self._commit(durable, on_commit)
            except TransactionConflict:
                self._finished()
                raise
            self._finished()
            return
        try:
            started = time.perf_counter()
            applied = await self._commit(durable, on_commit, timed=True)
        except StorageError as exc:
            listener.storage_failed(exc)
            raise
        except TransactionConflict:
            self._finished()
            listener.commit_conflicted()
            raise
        self._finished()
        ended = time.perf_counter()
        if applied is None:  # not durable: the whole call was the apply
            listener.commit_timed(ended - started, None)
        else:
            listener.commit_timed(applied - started, ended - applied)

    async def _commit(
        self, durable: bool, on_commit: Callable[[], None] | None, *, timed: bool = False
    ) -> float | None:
        """`commit`; with ``timed``, return when the apply ended (durable commits only)."""
        applied: float | None = None
        fault = write_fault("commit", transaction=True, durable=durable)
        with _shielded_write(self._commit_deadline):
            if fault is not None and fault.kind in ("conflict", "unavailable", "permanent", "lost"):
                await call(self._txn.rollback)
                await before_applying(fault)
            handle = await call(self._txn.commit)
            flusher = self._flusher if handle is not None else None
            ticket = flusher.applied() if flusher is not None else 0
            if on_commit is not None:
                on_commit()
            await after_applying(fault)
            if durable and handle is not None:
                if timed:
                    applied = time.perf_counter()
                if flusher is not None:
                    await flusher.covered(ticket)
                await call(handle.await_durable)
        return applied

    async def rollback(self) -> None:
        """Discard the transaction. Safe to call at any time, including after `commit`."""
        if self._completed:
            return
        self._completed = True
        self._finished()  # nothing of it was committed, whatever the rollback call says
        with hold_interrupts(), trio.move_on_after(_ROLLBACK_DEADLINE, shield=True):
            try:
                await call(self._txn.rollback)
            except StorageError as exc:  # already completed, closed, fenced: nothing to undo
                _log.debug("rollback: %s", exc)


async def run_transaction(
    db: Database,
    body: Callable[[Transaction], Awaitable[_T]],
    *,
    durable: bool,
    max_attempts: int = 64,
    on_commit: Callable[[], None] | None = None,
) -> _T:
    """Run `body` in a transaction and commit it, retrying on write conflicts.

    Each attempt begins a fresh transaction. `body` must be safe to run again: it should read
    what it needs through the transaction it is given. Conflicts back off with a small, growing,
    jittered delay (at most 50 ms).

    Args:
        db: The database.
        body: Reads and buffers writes through the transaction; its result is returned.
        durable: Whether the commit waits for durability.
        max_attempts: Attempts before giving up.
        on_commit: Called once, when the commit that succeeds is applied and before its
            durability wait (see `Transaction.commit`).

    Returns:
        What `body` returned in the attempt that committed.

    Raises:
        StorageError: The transaction conflicted `max_attempts` times (chained to the last
            conflict), or storage failed.
    """
    if max_attempts < 1:
        raise UsageError(f"max_attempts must be >= 1, not {max_attempts}")
    last_conflict: TransactionConflict | None = None
    for attempt in range(max_attempts):
        txn = await db.begin()
        try:
            result = await body(txn)
            await txn.commit(durable=durable, on_commit=on_commit)
        except TransactionConflict as exc:
            last_conflict = exc
            await txn.rollback()
        except BaseException:
            await txn.rollback()
            raise
        else:
            return result
        backoff_end = trio.current_time() + random.uniform(0.0, min(0.05, 0.002 * 2.0**attempt))
        await wait_holding(partial(trio.sleep_until, backoff_end))
    raise StorageError(f"transaction kept conflicting ({max_attempts} attempts)") from last_conflict


protect(Database, Reader, Snapshot, Transaction, run_transaction)
