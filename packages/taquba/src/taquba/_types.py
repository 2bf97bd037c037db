"""Public value types of the queue API: requests, results, claims and pages."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from ._lease import CancelToken
    from ._records import JobRecord

__all__ = [
    "CancelOutcome",
    "Claim",
    "Effects",
    "EnqueueRequest",
    "EnqueueResult",
    "JobPage",
    "KvPage",
    "NackResult",
    "PayloadCollection",
    "WakeOutcome",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueRequest:
    """One job to enqueue, with its options. Unset options inherit the queue's configuration.

    Used by `Queue.enqueue_batch` and as a follow-up enqueue inside `Effects`.
    """

    queue_name: str
    """The name of the queue to put the job on."""
    payload: bytes
    """The job's payload."""
    priority: int | None = None
    """Claim priority (lower first); default: the queue's ``default_priority``."""
    run_at: datetime | None = None
    """Do not claim before this time (timezone-aware). A past time means now."""
    delay: float | None = None
    """Do not claim for this many seconds. Exclusive with ``run_at``."""
    dedup_key: str | None = None
    """If a pending or scheduled job on the same queue holds this key, enqueue nothing."""
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    """Caller metadata stored with the job."""
    max_attempts: int | None = None
    """Override the queue's ``max_attempts`` for this job."""
    job_id: str | None = None
    """Use this id instead of a generated ULID (1 to 128 of ``[A-Za-z0-9_-]``)."""


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The outcome of one enqueue."""

    id: str
    """The job's id: the new job's, or the existing job's on a dedup hit."""
    created: bool
    """False when a dedup key matched an existing job and nothing was written."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Effects:
    """Writes applied atomically with a settlement (see `Queue.ack_with`).

    Either the settlement and every effect commit together, or nothing does. A follow-up
    enqueue whose dedup key matches an existing job is reported with ``created=False``; the
    settlement and the other effects still commit.
    """

    enqueues: Sequence[EnqueueRequest] = ()
    """Follow-up jobs, each honouring its own options."""
    kv_writes: Mapping[bytes, bytes] = field(default_factory=dict[bytes, bytes])
    """User KV entries to write."""
    kv_deletes: Sequence[bytes] = ()
    """User KV keys to delete."""
    kv_expect: Mapping[bytes, bytes | None] = field(default_factory=dict[bytes, bytes | None])
    """Preconditions on user KV entries, checked in the settlement's transaction: each key
    must hold exactly the given value (``None``: must be absent). If one does not, the
    settlement raises `KvConflict` and nothing of it is written: the claim stays held and can
    be settled again (with other effects, a nack, a dead-letter). A concurrent write to an
    expected key makes the transaction conflict and re-check, so the check and the writes
    are one atomic step (compare-and-set across the settlement)."""


class CancelOutcome(enum.StrEnum):
    """What `Queue.cancel` did."""

    REMOVED = "removed"
    """The job was pending or scheduled and has been deleted."""
    REQUESTED = "requested"
    """The job is claimed; its handler was asked to stop (cancellation is cooperative)."""
    NOT_FOUND = "not_found"
    """No pending, scheduled or claimed job has this id."""


class WakeOutcome(enum.StrEnum):
    """What `Queue.wake_scheduled` did."""

    WOKEN = "woken"
    """The job was scheduled; it is pending now, with the wake's payload on its record."""
    NOT_SCHEDULED = "not_scheduled"
    """The job exists but is not scheduled (already due and promoted, claimed, or ended)."""
    NOT_FOUND = "not_found"
    """No job has this id."""


class Claim:
    """One delivery of a job to a worker: the only object that can settle it.

    A claim is valid until it is settled, or until its lease expires and the reaper requeues
    the job, after which settling it raises `ClaimLost`. Records read with `Queue.get_job` or
    `Queue.list_jobs` cannot settle anything.
    """

    __slots__ = ("_cancel", "_job", "_owner", "_token")

    def __init__(self, job: JobRecord, token: int, owner: object, cancel: CancelToken) -> None:
        """Made by the queue that claimed the job: `Queue.claim` and friends.

        A `QueueLike` implemented outside the core builds its own:
        ``Claim(job, token=<its fencing token>, owner=self, cancel=CancelToken())``; it reads
        `token` and `owner` back when the claim is settled, and fires ``cancel`` when the
        job's cancellation is requested. Anyone else: do not build claims.

        Args:
            job: the job as claimed.
            token: the fencing token of this delivery (opaque to everyone but ``owner``).
            owner: the queue object that made the claim and alone can settle it.
            cancel: the delivery's cancellation signal.
        """
        self._job = job
        self._token = token
        self._owner = owner
        self._cancel = cancel

    @property
    def job(self) -> JobRecord:
        """The job as it was when claimed."""
        return self._job

    @property
    def id(self) -> str:
        """The job id."""
        return self._job.id

    @property
    def queue_name(self) -> str:
        """The name of the job's queue."""
        return self._job.queue_name

    @property
    def payload(self) -> bytes:
        """The job's payload."""
        return self._job.payload

    @property
    def attempts(self) -> int:
        """Which attempt this delivery is (1 for the first)."""
        return self._job.attempts

    @property
    def token(self) -> int:
        """The fencing token of this delivery, for the queue that made the claim."""
        return self._token

    @property
    def owner(self) -> object:
        """The queue object that made this claim (the only one that can settle it)."""
        return self._owner

    @property
    def cancel_requested(self) -> bool:
        """Whether `Queue.cancel` was called for this job during (or before) this delivery."""
        return self._cancel.cancelled

    async def wait_cancel_requested(self) -> None:
        """Wait until the job's cancellation is requested."""
        await self._cancel.wait()

    def __repr__(self) -> str:
        return f"<Claim {self._job.queue_name}/{self._job.id} attempt {self._job.attempts}>"


@dataclass(frozen=True, slots=True)
class NackResult:
    """What `Queue.nack` did."""

    dead: bool
    """True if the job ran out of attempts and was dead-lettered, False if it will be retried."""
    enqueued: list[EnqueueResult]
    """Results of ``effects_if_dead`` follow-up enqueues (empty when retried)."""


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of `Queue.list_jobs`."""

    jobs: list[JobRecord]
    """The jobs of this page (possibly fewer than the limit while more remain)."""
    next_cursor: bytes | None
    """Pass to the next call to continue; None when the listing is exhausted."""


@dataclass(frozen=True, slots=True)
class KvPage:
    """One page of `Queue.kv_scan`."""

    entries: list[tuple[bytes, bytes]]
    """``(key, value)`` pairs in ascending key order."""
    next_cursor: bytes | None
    """Pass to the next call to continue; None when the scan is exhausted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PayloadCollection:
    """What `Queue.collect_payloads_now` did to the queue's offloaded payload objects.

    Every object listed is counted once, in exactly one of ``deleted``, ``young``,
    ``referenced``, ``foreign`` and ``failed`` (an object that an ack's own delete removed
    meanwhile is in none). Bytes freed are not reported: a listing does not give sizes.
    """

    examined: int
    """Objects listed in the payload directory."""
    deleted: int
    """Orphans deleted: older than the grace period and referenced by no job record."""
    young: int
    """Objects kept because their ref is younger than the grace period."""
    referenced: int
    """Old enough objects kept because a job record (any status) or an enqueue in flight
    references them."""
    foreign: int
    """Objects whose name is not a ref (a ULID): left alone, and logged."""
    failed: int
    """Orphans whose delete failed (logged); the next collection tries again."""
