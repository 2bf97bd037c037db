"""Reads of a queue database shared by `Queue` (the writer) and `QueueReader` (read-only).

Each function takes a *view*: anything with ``get`` and ``scan`` as the adapter's `Database`,
`Transaction` and `Reader` have. Whether a function's reads form one snapshot depends on the
view: a transaction is one; a database or a reader is not (each call sees its latest state).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, cast

import ormsgpack

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _quarantine as quarantine  # pyright: ignore[reportPrivateUsage]
from ._errors import DataError, UsageError
from ._ids import validate_job_id
from ._records import (
    JobAttempt,
    JobRecord,
    JobStatus,
    QueueStats,
    decode_attempt,
    decode_job,
    decode_map,
)
from ._types import JobPage, KvPage

if TYPE_CHECKING:
    from collections.abc import Sequence

STATS_FIELDS = ("pending", "scheduled", "claimed", "done", "dead")
"""The counters of a stats record and of a stats delta row, in row order."""

FOLD_BATCH = 4_096
"""Stats delta records read per scan."""

SCAN_PAGE = 256
"""Records read per scan by listings that filter."""

log = logging.getLogger("taquba")


class ReadView(Protocol):
    """What the reads need: point gets and prefix scans."""

    async def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""
        ...

    async def scan(
        self,
        prefix: bytes,
        *,
        start: bytes | None = None,
        start_inclusive: bool = True,
        end: bytes | None = None,
        limit: int | None = None,
        cache_blocks: bool = False,
        batch_size: int = ...,
        reverse: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` pairs under ``prefix`` in key order."""
        ...


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no such key)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))


def decode_counts(raw: bytes | None) -> list[int]:
    """The counters of a stats record (all zero if there is none)."""
    if raw is None:
        return [0] * len(STATS_FIELDS)
    data = decode_map(raw)
    return [int(data.get(name, 0)) for name in STATS_FIELDS]


def decode_delta(raw: bytes) -> list[int]:
    """The counter changes of one stats delta record."""
    try:
        row: Any = ormsgpack.unpackb(raw)
    except ormsgpack.MsgpackDecodeError as exc:
        raise DataError(f"undecodable stats delta: {exc}") from exc
    if not isinstance(row, list) or len(row) != len(STATS_FIELDS):  # pyright: ignore[reportUnknownArgumentType]
        raise DataError("malformed stats delta")
    values = cast("list[object]", row)
    if not all(type(x) is int for x in values):
        raise DataError("malformed stats delta")
    return cast("list[int]", values)


def check_kv_key(key: object) -> bytes:
    """A user KV key as bytes; `UsageError` if it is not bytes-like."""
    if isinstance(key, (bytes, bytearray)):
        return bytes(key)
    if isinstance(key, memoryview):
        return key.tobytes()
    raise UsageError(f"KV keys must be bytes, not {type(key).__name__}")


async def locate(view: ReadView, job_id: str) -> tuple[bytes, bytes] | None:
    """The key and stored bytes of a job's current record, or None if it has none.

    The index is a hint that is rewritten only when a job moves to a key whose fields the
    index cannot imply: a scheduled key (due time), a done key (completion time), or a new
    pending key. While a job moves between its pending, claimed and dead keys, which share
    (queue, id), the index keeps pointing at the pending key, so claims, settlements and the
    reaper save a write per job; a reader that finds the pending key empty looks at the
    claimed and dead keys of the same (queue, id).
    """
    hint = await view.get(keys.index_key(job_id))
    if hint is None:
        return None
    raw = await view.get(hint)
    if raw is not None:
        return hint, raw
    if hint[0] == keys.Space.PENDING:
        queue = keys.parse_job_key(hint).queue
        for key in (keys.claimed_key(queue, job_id), keys.dead_key(queue, job_id)):
            raw = await view.get(key)
            if raw is not None:
                return key, raw
    return None


async def job_history(view: ReadView, job_id: str) -> list[JobAttempt] | None:
    """The attempt history of a job, oldest first; None if no job has this id.

    Read in one scan of the job's history prefix, bounded by the record's count (an entry
    beyond it would be the leftover of a transaction that never committed its record).
    """
    found = await locate(view, job_id)
    if found is None:
        return None
    job = decode_job(found[1])
    if not job.history_size:
        return []
    rows = await view.scan(keys.history_prefix(job_id), limit=job.history_size)
    return [decode_attempt(value) for _, value in rows]


async def read_stats(
    view: ReadView, queue: str, floor: int | None = None
) -> tuple[bytes | None, QueueStats]:
    """The raw stats record of ``queue`` and its counters (the record plus every delta).

    ``floor``: the writer's fold floor (`DeltaSeqs.floor`, read before ``view`` was opened):
    every delta below it is in the record, so the scan starts there.
    """
    base = await view.get(keys.stats_key(queue))
    totals = decode_counts(base)
    prefix = keys.stats_delta_prefix(queue)
    start: bytes | None = None
    inclusive = False
    if floor is not None:
        start, inclusive = keys.stats_delta_key(queue, floor), True
    while True:
        rows = await view.scan(prefix, start=start, start_inclusive=inclusive, limit=FOLD_BATCH)
        inclusive = False
        for key, value in rows:
            try:
                delta = decode_delta(value)
            except DataError as exc:
                # The writer's fold quarantines it; until then it counts for nothing.
                log.warning("skipping an undecodable stats delta %r: %s", key, exc)
                continue
            for i, amount in enumerate(delta):
                totals[i] += amount
        if len(rows) < FOLD_BATCH:
            quarantined = await quarantine.count(view, queue)
            return base, QueueStats(queue, *totals, quarantined=quarantined)
        start = rows[-1][0]


async def list_queue_names(view: ReadView) -> list[str]:
    """Every queue that has ever held a job, sorted by name."""
    names = await queues_in(view, keys.Space.STATS)
    return sorted(names | await queues_in(view, keys.Space.STATS_DELTA))


async def queues_in(view: ReadView, space: keys.Space) -> set[str]:
    """The queues with at least one key in ``space`` (a per-queue space: stats, deltas)."""
    names: set[str] = set()
    prefix = keys.space_prefix(space)
    start: bytes | None = None
    while True:
        rows = await view.scan(prefix, start=start, limit=1)
        if not rows:
            return names
        queue = keys.parse_queue_key(rows[0][0])
        names.add(queue)
        start = prefix_end(prefix + keys.encode_queue(queue))
        if start is None:
            return names


async def list_jobs_page(
    view: ReadView, queue: str, status: JobStatus, cursor: bytes | None, limit: int
) -> JobPage:
    """One page of ``queue``'s jobs in ``status`` (see `Queue.list_jobs`)."""
    keys.validate_queue_name(queue)
    status = JobStatus(status)
    if not isinstance(limit, int) or limit < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise UsageError("limit must be a non-negative int")
    if limit == 0:
        return JobPage([], cursor)
    filtered = status in (JobStatus.SCHEDULED, JobStatus.DONE)
    if status is JobStatus.PENDING:
        prefix = keys.pending_prefix(queue)
    elif status is JobStatus.CLAIMED:
        prefix = keys.claimed_prefix(queue)
    elif status is JobStatus.DEAD:
        prefix = keys.dead_prefix(queue)
    elif status is JobStatus.SCHEDULED:
        prefix = keys.space_prefix(keys.Space.SCHEDULED)
    else:
        prefix = keys.space_prefix(keys.Space.DONE)
    if cursor is not None and not cursor.startswith(prefix):
        return JobPage([], None)
    jobs: list[JobRecord] = []
    start = cursor
    while True:
        page = limit if not filtered else max(limit, SCAN_PAGE)
        rows = await view.scan(prefix, start=start, start_inclusive=start is None, limit=page)
        for key, value in rows:
            start = key
            try:
                job = decode_job(value)
            except DataError as exc:
                # The writer quarantines it when it meets it; a listing just leaves it out.
                log.warning("leaving out an undecodable record %r of queue %r: %s", key, queue, exc)
                continue
            if filtered and job.queue_name != queue:
                continue
            jobs.append(job)
            if len(jobs) == limit:
                return JobPage(jobs, key)
        if len(rows) < page:
            return JobPage(jobs, None)


async def dead_jobs(view: ReadView, queue: str, after: str | None, limit: int) -> list[JobRecord]:
    """Dead-lettered jobs of ``queue`` in id order, after the id ``after``."""
    cursor = keys.dead_key(queue, validate_job_id(after)) if after is not None else None
    return (await list_jobs_page(view, queue, JobStatus.DEAD, cursor, limit)).jobs


async def kv_scan_page(view: ReadView, prefix: bytes, cursor: bytes | None, limit: int) -> KvPage:
    """Entries of the user namespace under ``prefix`` (see `Queue.kv_scan`)."""
    check_kv_key(prefix)
    if not isinstance(limit, int) or limit < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise UsageError("limit must be a non-negative int")
    if limit == 0:
        return KvPage([], cursor)
    full = keys.user_key(prefix)
    start = keys.user_key(cursor) if cursor is not None else None
    if start is not None and not start.startswith(full):
        return KvPage([], None)
    rows: Sequence[tuple[bytes, bytes]] = await view.scan(
        full, start=start, start_inclusive=start is None, limit=limit
    )
    entries = [(key[1:], value) for key, value in rows]
    return KvPage(entries, entries[-1][0] if len(entries) == limit else None)
