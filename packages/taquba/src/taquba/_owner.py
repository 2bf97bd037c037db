"""The owner record: who holds a store's writer, and whether it is alive (the heartbeat).

The process that opens a database with `open_queue` writes an `OwnerInfo` under the owner
key (``0C 01``, see ``docs/design/queue-internals.md``) when it opens, rewrites it every
``heartbeat_interval`` seconds (and promptly after `Queue.set_owner_address`), and deletes it
when it closes cleanly. Other processes read it through `QueueReader.owner`; the ``taquba``
admin commands that would open a writer refuse while a fresh record says a live owner holds the
store, instead of fencing it.

Theory of operation.

- The record's times are wall-clock milliseconds (`time.time`), not the queue's `Clock`: the
  record is about processes, read by other processes on other hosts.
- A record is fresh while ``heartbeat_at`` is within `FRESH_INTERVALS` intervals of now. A
  process that was killed leaves a record that goes stale; the next writer to open the
  database overwrites it.
- Heartbeat writes are not durable writes (no wait for the WAL flush): the record reaches the
  store with the next flush, at most ``flush_interval`` later. A failed write is retried with
  backoff and shown by `Queue.health` (loop ``"heartbeat"``); only `Fenced`, `StorageFatal`
  and `QueueClosed` end the loop, as for the other background tasks. A write at open that fails
  does not fail the open.
- The record is pure data (`encode_owner`, `decode_owner`); unknown map keys are ignored, so a
  newer writer's record stays readable.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, Any, Final

import trio

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from ._errors import DataError, Fenced, QueueClosed, StorageFatal, TaqubaError
from ._interrupts import protect
from ._records import decode_map, encode_map

if TYPE_CHECKING:
    from ._context import QueueContext

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "FRESH_INTERVALS",
    "Heartbeat",
    "OwnerInfo",
    "decode_owner",
    "encode_owner",
    "owner_key",
]

log = logging.getLogger("taquba")

DEFAULT_HEARTBEAT_INTERVAL: Final = 5.0
"""Seconds between two writes of the owner record (`open_queue`'s ``heartbeat_interval``)."""

FRESH_INTERVALS: Final = 3
"""An owner record is fresh while its last heartbeat is at most this many intervals old."""


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def _version() -> str:
    try:
        return package_version("taquba")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        return "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerInfo:
    """The owner record of a queue database: the process holding its writer.

    Read it with `QueueReader.owner` (another process) or `Queue.owner_info` (the owner
    itself). Times are wall-clock milliseconds since the epoch.
    """

    owner_id: str
    """Random per `open_queue`, so two opens by one process are told apart."""
    pid: int
    """The owner's process id (on `hostname`)."""
    hostname: str
    """The host the owner runs on."""
    started_at: int
    """When the owner opened the database."""
    heartbeat_at: int
    """When the owner last wrote this record."""
    interval: float
    """Seconds between the owner's heartbeats."""
    address: str | None
    """Where the owner serves its API (a taquba-server URL), or None."""
    version: str
    """The owner's taquba version."""

    def is_fresh(self, now_ms: int | None = None) -> bool:
        """Whether the owner looks alive at ``now_ms`` (default: now).

        True while the last heartbeat is at most `FRESH_INTERVALS` (3) intervals old, so one
        or two late heartbeats do not make a live owner look dead. A killed owner's record
        stops being fresh within three intervals.
        """
        now = now_ms if now_ms is not None else _now()
        return now - self.heartbeat_at <= FRESH_INTERVALS * self.interval * 1000

    def describe(self) -> str:
        """One line naming the owner: process, host and address."""
        where = f" serving {self.address}" if self.address else ""
        return f"pid {self.pid} on {self.hostname}{where} (taquba {self.version})"


_now = now_ms


def owner_key() -> bytes:
    """The key of the owner record."""
    return keys.space_prefix(keys.Space.OWNER)


def encode_owner(info: OwnerInfo) -> bytes:
    """Encode an owner record for storage."""
    return encode_map(
        {
            "owner_id": info.owner_id,
            "pid": info.pid,
            "hostname": info.hostname,
            "started_at": info.started_at,
            "heartbeat_at": info.heartbeat_at,
            "interval": info.interval,
            "address": info.address,
            "version": info.version,
        }
    )


def decode_owner(raw: bytes) -> OwnerInfo:
    """Decode a stored owner record; raise `DataError` if it cannot be read."""
    data: dict[str, Any] = decode_map(raw)
    try:
        info = OwnerInfo(
            owner_id=_field(data, "owner_id", str),
            pid=_field(data, "pid", int),
            hostname=_field(data, "hostname", str),
            started_at=_field(data, "started_at", int),
            heartbeat_at=_field(data, "heartbeat_at", int),
            interval=float(_field(data, "interval", (int, float))),
            address=_field(data, "address", (str, type(None))),
            version=_field(data, "version", str),
        )
    except KeyError as exc:
        raise DataError(f"undecodable owner record: missing {exc}") from exc
    if not info.interval > 0:
        raise DataError(f"undecodable owner record: interval {info.interval!r}")
    return info


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise DataError(f"undecodable owner record: {name} is {type(value).__name__}")
    return value


class Heartbeat:
    """Writes the owner record of one open queue (see the module docstring)."""

    def __init__(self, context: QueueContext, interval: float) -> None:
        self._context = context
        started = now_ms()
        self.info = OwnerInfo(
            owner_id=secrets.token_hex(8),
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=started,
            heartbeat_at=started,
            interval=interval,
            address=None,
            version=_version(),
        )
        self._wake = trio.Event()
        self.written = False
        """Whether a write of the record has succeeded (so close deletes it)."""

    def set_address(self, address: str | None) -> None:
        """Carry ``address`` from the next heartbeat on, and write it soon."""
        self.info = replace(self.info, address=address)
        self._wake.set()

    async def beat(self) -> None:
        """Write the record once, with a fresh ``heartbeat_at``."""
        db = self._context.database
        info = self.info = replace(self.info, heartbeat_at=now_ms())
        await db.put(owner_key(), encode_owner(info), durable=False)
        self.written = True

    async def write_at_open(self) -> None:
        """The first write; a failure is logged and left to the loop, never fatal here."""
        try:
            await self.beat()
        except (Fenced, StorageFatal, QueueClosed):
            raise
        except TaqubaError as exc:
            log.warning("could not write the owner record at open (will retry): %s", exc)

    async def run(self) -> None:
        """Rewrite the record every interval (or promptly when woken) until the queue stops.

        Only `Fenced` and `StorageFatal` (which stop the queue) and `QueueClosed` end it; any
        other error is logged, shown by `Queue.health` and retried after a backoff.
        """
        context = self._context
        streak = context.health.streak("heartbeat")
        try:
            delay = self.info.interval if self.written else 0.0  # the write at open failed
            while context.failure is None:
                with trio.move_on_after(delay):
                    await self._wake.wait()
                self._wake = trio.Event()
                delay = self.info.interval
                try:
                    await self.beat()
                except (Fenced, StorageFatal) as exc:
                    context.fail(exc)
                    return
                except QueueClosed:
                    return
                except Exception as exc:  # one failed heartbeat must not end the queue
                    delay = max(min(delay, streak.failed(exc)), 0.01)
                else:
                    streak.succeeded()
        finally:
            context.health.release(streak)

    async def remove(self) -> None:
        """Delete the record at a clean close (best effort: a leftover goes stale)."""
        db = self._context.db
        if db is None or not self.written:
            return
        try:
            await db.delete(owner_key(), durable=False)
        except TaqubaError as exc:
            log.warning("could not remove the owner record at close: %s", exc)


# Ctrl-C must never stop the queue's own code halfway (see taquba._interrupts).
protect(Heartbeat)
