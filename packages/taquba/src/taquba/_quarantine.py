"""Quarantine: undecodable records are moved aside, so one bad record never stops a queue.

A record taquba cannot decode (corrupted bytes, or a format it does not know) used to make
every operation that read it fail: a claim on its queue, every promotion tick, every fold. Now
the code that meets one moves it, in the same transaction, from its key to the quarantine
space (``0B 01 qlen queue original_key``), keeping the raw bytes and the key it came from, and
carries on without it. An operator inspects it with `Queue.quarantined` and can write a repaired
record back under ``original_key`` (or drop it).

Counters: the bad record was counted where it lay (a pending record in ``pending``, a dead one
in ``dead``, ...), so moving it aside also takes it out of that counter; `QueueStats.quarantined`
counts the quarantined records themselves. So the counters still equal a recount of records.

Each record is logged once, as a warning naming its queue and key, when it is moved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from ._errors import DataError
from ._records import decode_map, encode_map

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._adapter import Transaction
    from ._views import ReadView

__all__ = ["Moved", "QuarantinedRecord", "count", "list_page", "log_moved", "stage"]

log = logging.getLogger("taquba")

_COUNTERS = {
    keys.Space.PENDING: "pending",
    keys.Space.SCHEDULED: "scheduled",
    keys.Space.CLAIMED: "claimed",
    keys.Space.DEAD: "dead",
}
"""The counter a record of each job space is counted in (done records count in no live one)."""

_PAGE = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantinedRecord:
    """A record taquba could not decode, moved aside with its raw bytes (`Queue.quarantined`).

    Nothing reads it again on its own. To recover the job, write a repaired record back under
    `key` (for a job, as MessagePack in the format of a `JobRecord`), or leave it for good.
    """

    queue_name: str | None
    """The queue the record belonged to, as its key names it (None if the key names none)."""
    key: bytes
    """The key the record was stored under."""
    raw: bytes
    """The record's bytes, exactly as they were stored."""
    reason: str
    """Why it could not be decoded."""
    quarantined_at: int
    """When it was moved aside (epoch milliseconds of the queue's clock)."""


@dataclass(frozen=True, slots=True)
class Moved:
    """One record moved aside by `stage` (internal)."""

    queue: str | None
    key: bytes
    counter: str | None
    """The live counter the record was counted in, to decrement (None: none)."""
    reason: str


def _origin(key: bytes) -> tuple[str | None, str | None]:
    """The queue a record's key names and the live counter the record counted in."""
    try:
        if key[:1] == bytes((keys.Space.STATS_DELTA,)):
            return keys.parse_queue_key(key), None
        parsed = keys.parse_job_key(key)
    except (ValueError, IndexError, UnicodeDecodeError):
        return None, None
    return parsed.queue, _COUNTERS.get(parsed.space)


async def stage(
    txn: Transaction, key: bytes, raw: bytes, error: DataError | str, now_ms: int
) -> Moved:
    """Move the record ``raw`` at ``key`` into quarantine within ``txn``.

    The caller decrements ``Moved.counter`` of ``Moved.queue`` in the same transaction and
    calls `log_moved` once the transaction has committed.
    """
    queue, counter = _origin(key)
    reason = str(error)
    await txn.delete(key)
    await txn.put(
        keys.quarantine_key(queue, key),
        encode_map({"key": key, "raw": raw, "reason": reason, "at": now_ms}),
    )
    return Moved(queue, key, counter, reason)


def log_moved(moved: Iterable[Moved]) -> None:
    """Log each committed quarantine move once, as a warning with its queue and key."""
    for item in moved:
        log.warning(
            "quarantined an undecodable record of queue %r stored under %r (%s); "
            "see Queue.quarantined",
            item.queue,
            item.key,
            item.reason,
        )


def _decode(key: bytes, value: bytes, queue: str | None) -> QuarantinedRecord:
    try:
        data = decode_map(value)
        return QuarantinedRecord(
            queue_name=queue,
            key=bytes(data["key"]),
            raw=bytes(data["raw"]),
            reason=str(data.get("reason", "")),
            quarantined_at=int(data.get("at", 0)),
        )
    except (DataError, KeyError, TypeError, ValueError) as exc:
        # The quarantine record itself is damaged: show what there is.
        prefix = keys.quarantine_prefix(queue)
        return QuarantinedRecord(
            queue_name=queue, key=key[len(prefix) :], raw=value, reason=str(exc), quarantined_at=0
        )


async def list_page(
    view: ReadView, queue: str | None, after: bytes | None, limit: int
) -> list[QuarantinedRecord]:
    """Quarantined records of ``queue`` in original-key order, after the original key ``after``."""
    prefix = keys.quarantine_prefix(queue)
    start = prefix + after if after is not None else None
    rows = await view.scan(prefix, start=start, start_inclusive=start is None, limit=limit)
    return [_decode(key, value, queue) for key, value in rows]


async def count(view: ReadView, queue: str) -> int:
    """How many quarantined records ``queue`` holds."""
    prefix = keys.quarantine_prefix(queue)
    total = 0
    start: bytes | None = None
    while True:
        rows = await view.scan(prefix, start=start, start_inclusive=False, limit=_PAGE)
        total += len(rows)
        if len(rows) < _PAGE:
            return total
        start = rows[-1][0]
