"""Records stored in a taquba database, and their MessagePack encoding.

Records are frozen dataclasses. On disk each is a MessagePack map (``ormsgpack``, bytes as
``bin``) carrying a format version under ``"v"``; a record of an unknown version, or one that
fails to decode, raises `DataError` rather than being misread.

The map keys are the field names, except that `JobRecord.queue_name` is stored under
``"queue"``, the field's name before it was renamed: the stored format did not change with it.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import ormsgpack

from ._errors import DataError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "PRIORITY_NORMAL",
    "AttemptOutcome",
    "JobAttempt",
    "JobRecord",
    "JobStatus",
    "QueueStats",
    "attempt_from_map",
    "decode_attempt",
    "decode_job",
    "encode_attempt",
    "encode_job",
]

FORMAT_VERSION = 1

PRIORITY_HIGH = 100
"""A priority claimed before the default (lower numbers are claimed first)."""
PRIORITY_NORMAL = 1_000
"""The default priority."""
PRIORITY_LOW = 10_000
"""A priority claimed after the default."""
MAX_PRIORITY = 2**32 - 1
"""The largest priority (priorities are unsigned 32-bit; lower is claimed first)."""
MAX_ATTEMPTS = 2**63 - 1
"""The largest ``max_attempts`` (records store it as a 64-bit MessagePack int)."""


class JobStatus(enum.StrEnum):
    """Where a job is in its life cycle.

    ``PENDING -> CLAIMED -> DONE`` (or deleted); a failed claim goes back to ``PENDING`` or to
    ``SCHEDULED`` (retry backoff), or to ``DEAD``; ``SCHEDULED -> PENDING`` when due.
    """

    PENDING = "pending"
    SCHEDULED = "scheduled"
    CLAIMED = "claimed"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """A job as stored; timestamps are epoch milliseconds read from the queue's clock.

    A record read with `Queue.get_job` or `Queue.list_jobs` is a snapshot: it cannot settle the
    job. Only a `Claim` can.
    """

    id: str
    """The job id (a ULID unless the enqueuer supplied one)."""
    queue_name: str
    """The name of the queue the job belongs to."""
    payload: bytes
    """The job's payload, as enqueued."""
    status: JobStatus
    """The job's state when the record was read."""
    priority: int
    """Claim priority; lower numbers are claimed first, FIFO within a priority."""
    attempts: int
    """How many times the job has been claimed (each claim is an attempt)."""
    max_attempts: int
    """After this many failed attempts the job is dead-lettered."""
    enqueued_at: int
    """When the job was first enqueued."""
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    """Caller metadata stored with the job."""
    claimed_at: int | None = None
    """When the current or most recent claim began."""
    run_at: int | None = None
    """When a scheduled job becomes due (only while scheduled)."""
    last_error: str | None = None
    """The most recent failure: a nack message, dead-letter reason or ``"lease expired"``."""
    dedup_key: str | None = None
    """The job's dedup key, released when the job is first claimed."""
    completed_at: int | None = None
    """When the job was acknowledged (kept done jobs only)."""
    failed_at: int | None = None
    """When the job was dead-lettered."""
    cancel_requested: bool = False
    """Whether a cancel was requested while the job was claimed."""
    woken_at: int | None = None
    """When `Queue.wake_scheduled` made the job due early (kept for the job's whole life)."""
    wake_payload: bytes | None = None
    """The bytes given to `Queue.wake_scheduled`, seen by every later delivery of the job."""
    history_size: int = 0
    """How many entries the job's attempt history holds (`Queue.get_job_history`)."""
    payload_ref: str | None = None
    """The name of the object holding the payload, if it was offloaded (see
    `QueueConfig.payload_offload_threshold`); None when the payload is stored in the record.

    Records returned by claims and reads carry the payload itself either way: the ref says
    where it came from. It never changes during the job's life."""

    def replace(self, **changes: Any) -> JobRecord:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


class AttemptOutcome(enum.StrEnum):
    """How an attempt of a job ended (or, for ``REQUEUED``, that the job was revived)."""

    COMPLETED = "completed"
    """Acknowledged (recorded only for a queue that keeps done jobs: otherwise the ack
    deletes the job and its history with it)."""
    RETRIED = "retried"
    """Nacked, with attempts left: the job went back to pending or to its retry backoff."""
    DEAD_LETTERED = "dead_lettered"
    """Nacked out of attempts, dead-lettered, or abandoned out of attempts."""
    LEASE_EXPIRED = "lease_expired"
    """The lease ran out before the attempt was settled; the reaper requeued the job."""
    INTERRUPTED = "interrupted"
    """The process holding the claim ended; the next writer to open the database requeued it."""
    REQUEUED = "requeued"
    """`Queue.requeue_dead_job` revived the dead job (not an attempt: ``attempt`` is 0)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobAttempt:
    """One entry of a job's attempt history (`Queue.get_job_history`); times in epoch ms."""

    attempt: int
    """The attempt this entry ends (1 for the first claim; 0 for ``REQUEUED``)."""
    outcome: AttemptOutcome
    """How it ended."""
    recorded_at: int
    """When the entry was written."""
    claimed_at: int | None = None
    """When the attempt's claim began (None for ``REQUEUED``)."""
    error: str | None = None
    """The nack error or dead-letter reason (``RETRIED`` and ``DEAD_LETTERED`` only)."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counters of one queue.

    ``pending``, ``scheduled``, ``claimed`` and ``dead`` are live counts; ``done`` is cumulative
    (every acknowledged job, whether or not its record is kept); ``quarantined`` counts the
    undecodable records set aside (see `Queue.quarantined`), which no other counter includes.
    """

    queue_name: str
    """The name of the queue these counters describe."""
    pending: int = 0
    """Jobs waiting to be claimed."""
    scheduled: int = 0
    """Jobs waiting for their due time (including retry backoff)."""
    claimed: int = 0
    """Jobs currently claimed by a worker."""
    done: int = 0
    """Jobs acknowledged since the queue was created."""
    dead: int = 0
    """Jobs in the dead-letter inbox."""
    quarantined: int = 0
    """Undecodable records of this queue moved aside (see `Queue.quarantined`)."""


_OPTIONAL = (
    "claimed_at",
    "run_at",
    "last_error",
    "dedup_key",
    "completed_at",
    "failed_at",
    "woken_at",
    "wake_payload",
    "payload_ref",
)


def encode_job(job: JobRecord) -> bytes:
    """Encode a job record for storage."""
    data: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "id": job.id,
        "queue": job.queue_name,  # stored under its pre-rename name
        "payload": job.payload,
        "status": job.status.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "enqueued_at": job.enqueued_at,
    }
    if job.headers:
        data["headers"] = dict(job.headers)
    for name in _OPTIONAL:
        value = getattr(job, name)
        if value is not None:
            data[name] = value
    if job.cancel_requested:
        data["cancel_requested"] = True
    if job.history_size:
        data["history_size"] = job.history_size
    return ormsgpack.packb(data)


def decode_job(raw: bytes) -> JobRecord:
    """Decode a stored job record; raise `DataError` if it cannot be read."""
    try:
        data = _as_map(ormsgpack.unpackb(raw))
        if data is None or data.get("v") != FORMAT_VERSION:
            raise DataError(f"unsupported job record format: {raw[:32]!r}")
        return JobRecord(
            id=data["id"],
            queue_name=data["queue"],
            payload=data["payload"],
            status=JobStatus(data["status"]),
            priority=data["priority"],
            attempts=data["attempts"],
            max_attempts=data["max_attempts"],
            enqueued_at=data["enqueued_at"],
            headers=data.get("headers", {}),
            claimed_at=data.get("claimed_at"),
            run_at=data.get("run_at"),
            last_error=data.get("last_error"),
            dedup_key=data.get("dedup_key"),
            completed_at=data.get("completed_at"),
            failed_at=data.get("failed_at"),
            cancel_requested=data.get("cancel_requested", False),
            woken_at=data.get("woken_at"),
            wake_payload=data.get("wake_payload"),
            history_size=data.get("history_size", 0),
            payload_ref=data.get("payload_ref"),
        )
    except DataError:
        raise
    except (ormsgpack.MsgpackDecodeError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"undecodable job record: {exc}") from exc


def attempt_from_map(data: Mapping[str, Any]) -> JobAttempt:
    """A `JobAttempt` from its map form (stored, or the HTTP API's JSON).

    Raises:
        KeyError, ValueError, TypeError: a field is missing or of the wrong kind.
    """
    return JobAttempt(
        attempt=data["attempt"],
        outcome=AttemptOutcome(data["outcome"]),
        recorded_at=data["recorded_at"],
        claimed_at=data.get("claimed_at"),
        error=data.get("error"),
    )


def encode_attempt(attempt: JobAttempt) -> bytes:
    """Encode one attempt-history entry for storage."""
    data: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "attempt": attempt.attempt,
        "outcome": attempt.outcome.value,
        "recorded_at": attempt.recorded_at,
    }
    if attempt.claimed_at is not None:
        data["claimed_at"] = attempt.claimed_at
    if attempt.error is not None:
        data["error"] = attempt.error
    return ormsgpack.packb(data)


def decode_attempt(raw: bytes) -> JobAttempt:
    """Decode a stored attempt-history entry; raise `DataError` if it cannot be read."""
    try:
        data = _as_map(ormsgpack.unpackb(raw))
        if data is None or data.get("v") != FORMAT_VERSION:
            raise DataError(f"unsupported attempt record format: {raw[:32]!r}")
        return attempt_from_map(data)
    except DataError:
        raise
    except (ormsgpack.MsgpackDecodeError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"undecodable attempt record: {exc}") from exc


def encode_map(data: Mapping[str, Any]) -> bytes:
    """Encode an internal record (cursor state, counters) with the format version."""
    return ormsgpack.packb({"v": FORMAT_VERSION, **data})


def decode_map(raw: bytes) -> dict[str, Any]:
    """Decode an internal record written by `encode_map`."""
    try:
        data = _as_map(ormsgpack.unpackb(raw))
    except ormsgpack.MsgpackDecodeError as exc:
        raise DataError(f"undecodable record: {exc}") from exc
    if data is None or data.get("v") != FORMAT_VERSION:
        raise DataError(f"unsupported record format: {raw[:32]!r}")
    return data


def _as_map(value: object) -> dict[str, Any] | None:
    """``value`` as a str-keyed dict, or None if it is not a dict."""
    if not isinstance(value, dict):
        return None
    return cast("dict[str, Any]", value)
