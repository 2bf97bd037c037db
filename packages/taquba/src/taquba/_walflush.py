"""Durability on demand: a write that waits for durability asks for a WAL flush.

SlateDB makes a write durable when its WAL buffer is written to the object store, by default
every ``flush_interval`` (100 ms): a lone durable write waits about that long, whatever the
disk could do. `WalFlusher` asks for the flush instead. The first writer to wait while no flush
is in flight leads one: it waits ``linger`` seconds for company (0 on memory and local disk),
notes how many writes have been applied, and requests one WAL flush for all of them. Writes
applied while that flush is in flight wait for it to end and then lead the next one, so one
flush is in flight at a time, a lone write is durable after about one object-store write, and
a busy database still shares each flush among every write that queued behind the previous one
(group commit). SlateDB's timer stays as the backstop.

Each writer still waits on its own write's durability handle after the flush that covers it:
the flush is a request, the handle is the proof. A flush that fails is logged and its writers
fall back to their handles, which report the storage's real answer (or are made durable by
the timer's retry).

Everything here runs on the database's trio thread inside a writer's shielded, deadline-bounded
write (see `taquba._database`), so it needs no lock and is never cancelled half-way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import slatedb.uniffi as _sdb
import trio

from taquba import _failpoints
from taquba._binding import call
from taquba._dbfaults import read_fault
from taquba._errors import StorageError

if TYPE_CHECKING:
    from taquba._store import StoreKind

__all__ = ["DEFAULT_LINGER", "WalFlusher", "default_linger"]

_log = logging.getLogger("taquba.storage")

DEFAULT_LINGER: Final[dict[StoreKind, float]] = {"memory": 0.0, "file": 0.0, "s3": 0.01}
"""Seconds a flush waits for company by store kind: on S3 each flush is a billed request."""

_WAL: Final = _sdb.FlushOptions(flush_type=_sdb.FlushType.WAL)


def default_linger(kind: StoreKind) -> float:
    """The default `WalFlusher` linger for a store of ``kind``."""
    return DEFAULT_LINGER[kind]


class _Flush:
    """One requested WAL flush: which writes it covers and how it ended."""

    __slots__ = ("covers", "done", "ok")

    def __init__(self) -> None:
        self.covers = 0
        self.ok = False
        self.done = trio.Event()


class WalFlusher:
    """Requests WAL flushes for writes that wait for durability (one in flight at a time)."""

    __slots__ = ("_applied", "_covered", "_db", "_in_flight", "flushes", "linger")

    def __init__(self, db: _sdb.Db, *, linger: float = 0.0) -> None:
        self._db = db
        self.linger = linger
        """Seconds a flush leader waits for other writes before requesting the flush."""
        self._applied = 0
        self._covered = 0
        self._in_flight: _Flush | None = None
        self.flushes = 0
        """WAL flushes requested so far (for benchmarks and tests)."""

    def applied(self) -> int:
        """Record that a write was applied (committed to the memtable); return its ticket."""
        self._applied += 1
        return self._applied

    async def covered(self, ticket: int) -> None:
        """Return once a requested flush that covers write ``ticket`` has ended.

        Returns early, without a guarantee, when a flush fails: the caller then waits on its
        write's durability handle, which is the authority either way.
        """
        while self._covered < ticket:
            flush = self._in_flight
            if flush is None:
                flush = await self._lead()
            else:
                await flush.done.wait()
            if not flush.ok:
                return

    async def _lead(self) -> _Flush:
        flush = _Flush()
        self._in_flight = flush
        try:
            if self.linger > 0:
                await trio.sleep(self.linger)
            flush.covers = self._applied
            if _failpoints.INSTALLED:
                await read_fault("flush")  # tests: a slow or failing flush
            await call(self._db.flush_with_options, _WAL)
            self.flushes += 1
            flush.ok = True
            self._covered = max(self._covered, flush.covers)
        except StorageError as exc:
            _log.warning("requested WAL flush failed (writers wait for the timer's): %s", exc)
        finally:
            self._in_flight = None
            flush.done.set()
        return flush
