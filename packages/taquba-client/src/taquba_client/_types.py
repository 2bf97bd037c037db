"""Client-side records: what the server's answers decode into, and what requests carry.

They mirror the core's records (`taquba.JobRecord` is `Job` here) without importing taquba.
Timestamps are milliseconds since the Unix epoch on the server's clock, as on the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

__all__ = [
    "Ack",
    "AttemptOutcome",
    "CancelOutcome",
    "Claim",
    "DeadLetter",
    "Effects",
    "EnqueueRequest",
    "EnqueueResult",
    "Health",
    "Job",
    "JobAttempt",
    "JobPage",
    "JobStatus",
    "KvPage",
    "Nack",
    "NackResult",
    "QueueStats",
    "RenewResult",
    "ServerConfig",
    "SettleResult",
    "Settlement",
    "WakeOutcome",
]


class JobStatus(enum.StrEnum):
    """Where a job is in its life cycle (the core's `taquba.JobStatus`)."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    CLAIMED = "claimed"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A job as the server read it (the core's `taquba.JobRecord`); a snapshot."""

    id: str
    """The job id."""
    queue_name: str
    """The name of the job's queue."""
    payload: bytes
    """The job's payload, as enqueued."""
    status: JobStatus
    """The job's state when it was read."""
    priority: int
    """Claim priority; lower numbers are claimed first."""
    attempts: int
    """How many times the job has been claimed."""
    max_attempts: int
    """After this many failed attempts the job is dead-lettered."""
    enqueued_at: int
    """When the job was first enqueued (ms since the epoch)."""
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    """Caller metadata stored with the job."""
    claimed_at: int | None = None
    """When the current or most recent claim began."""
    run_at: int | None = None
    """When a scheduled job becomes due."""
    last_error: str | None = None
    """The most recent failure."""
    dedup_key: str | None = None
    """The job's dedup key."""
    completed_at: int | None = None
    """When the job was acknowledged (kept done jobs only)."""
    failed_at: int | None = None
    """When the job was dead-lettered."""
    cancel_requested: bool = False
    """Whether a cancel was requested while the job was claimed."""
    woken_at: int | None = None
    """When a wake (`Client.wake_scheduled`) made the job due early (kept for its whole life)."""
    wake_payload: bytes | None = None
    """The payload of the job's latest wake, seen by every later delivery of the job."""
    history_size: int = 0
    """How many entries the job's attempt history holds (`Client.get_job_history`)."""

    @property
    def finished(self) -> bool:
        """Whether the job is done or dead: it will not run again unless requeued."""
        return self.status in (JobStatus.DONE, JobStatus.DEAD)


class AttemptOutcome(enum.StrEnum):
    """How an attempt of a job ended (the core's `taquba.AttemptOutcome`)."""

    COMPLETED = "completed"
    """Acknowledged (recorded only where the queue keeps done jobs)."""
    RETRIED = "retried"
    """Nacked with attempts left: the job went back to pending or to its retry backoff."""
    DEAD_LETTERED = "dead_lettered"
    """Nacked out of attempts, dead-lettered, or abandoned out of attempts."""
    LEASE_EXPIRED = "lease_expired"
    """The lease ran out before the attempt was settled; the server requeued the job."""
    INTERRUPTED = "interrupted"
    """The server (the owner process) ended while the attempt held its claim."""
    REQUEUED = "requeued"
    """The dead job was requeued (not an attempt: ``attempt`` is 0)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobAttempt:
    """One entry of a job's attempt history (the core's `taquba.JobAttempt`); times in ms."""

    attempt: int
    """The attempt this entry ends (1 for the first claim; 0 for ``REQUEUED``)."""
    outcome: AttemptOutcome
    """How it ended."""
    recorded_at: int
    """When the entry was written (ms since the epoch, server clock)."""
    claimed_at: int | None = None
    """When the attempt's claim began (None for ``REQUEUED``)."""
    error: str | None = None
    """The nack error or dead-letter reason (``RETRIED`` and ``DEAD_LETTERED`` only)."""


class WakeOutcome(enum.StrEnum):
    """What a wake did (the core's `taquba.WakeOutcome`)."""

    WOKEN = "woken"
    """The job was scheduled; it is pending now, with the wake's payload on its record."""
    NOT_SCHEDULED = "not_scheduled"
    """The job exists but is not scheduled (already due, claimed, or finished)."""
    NOT_FOUND = "not_found"
    """No job has this id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueRequest:
    """One job to enqueue (for `Client.enqueue_batch` and follow-ups in `Effects`).

    Unset options inherit the queue's configuration on the server.
    """

    queue_name: str
    """The name of the queue."""
    payload: bytes
    """The job's payload."""
    priority: int | None = None
    """Claim priority (lower first)."""
    run_at: datetime | None = None
    """Do not claim before this time (timezone-aware)."""
    delay: float | None = None
    """Do not claim for this many seconds. Exclusive with ``run_at``."""
    dedup_key: str | None = None
    """If a pending or scheduled job on the queue holds this key, enqueue nothing."""
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    """Caller metadata stored with the job."""
    max_attempts: int | None = None
    """Override the queue's ``max_attempts``."""
    job_id: str | None = None
    """The job id; the client assigns a ULID when None (that makes retries safe)."""


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The outcome of one enqueue."""

    id: str
    """The job's id (the existing job's on a dedup hit)."""
    created: bool
    """False when nothing was written: a dedup hit, or a retry of a request that had landed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Effects:
    """Writes applied atomically with a settlement (the core's `taquba.Effects`)."""

    enqueues: Sequence[EnqueueRequest] = ()
    """Follow-up jobs."""
    kv_writes: Mapping[bytes, bytes] = field(default_factory=dict[bytes, bytes])
    """User KV entries to write."""
    kv_deletes: Sequence[bytes] = ()
    """User KV keys to delete."""
    kv_expect: Mapping[bytes, bytes | None] = field(default_factory=dict[bytes, bytes | None])
    """Preconditions on user KV entries (``None``: must be absent). If one does not hold the
    settlement raises `KvConflict`, nothing is written and the claim is still held. Needs a
    server from taquba-server 0.3 (an older one refuses the field: `InvalidRequest`)."""


class CancelOutcome(enum.StrEnum):
    """What a cancel did (the core's `taquba.CancelOutcome`)."""

    REMOVED = "removed"
    """The job was pending or scheduled and has been deleted."""
    REQUESTED = "requested"
    """The job is claimed; its handler was asked to stop."""
    NOT_FOUND = "not_found"
    """No pending, scheduled or claimed job has this id."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counters of one queue (the core's `taquba.QueueStats`)."""

    queue_name: str
    """The queue these counters describe."""
    pending: int = 0
    """Jobs waiting to be claimed."""
    scheduled: int = 0
    """Jobs waiting for their due time."""
    claimed: int = 0
    """Jobs currently claimed."""
    done: int = 0
    """Jobs acknowledged since the queue was created (cumulative)."""
    dead: int = 0
    """Jobs in the dead-letter inbox."""
    quarantined: int = 0
    """Undecodable records set aside."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One delivery of a job to a remote worker; its token settles it.

    The token is opaque and fences late settlements: once the lease expires and the job is
    handed out again (or the server restarts), settling with it raises `ClaimLost`.
    """

    job: Job
    """The job as it was when claimed."""
    token: str
    """The server's claim token."""
    lease_expires_at: int
    """When the lease expires unless renewed (ms since the epoch, server clock)."""

    @property
    def id(self) -> str:
        """The job id."""
        return self.job.id

    @property
    def lease(self) -> float:
        """The lease length the server granted, in seconds."""
        start = self.job.claimed_at if self.job.claimed_at is not None else self.lease_expires_at
        return max(0.0, (self.lease_expires_at - start) / 1000)


@dataclass(frozen=True, slots=True)
class RenewResult:
    """The outcome of renewing one claim."""

    job_id: str
    """The job id."""
    expires_at: int | None
    """The new lease expiry, or None if the claim is lost."""
    cancel_requested: bool
    """Whether the job's cancellation was requested."""
    lost: bool
    """Whether the server no longer holds the claim."""


@dataclass(frozen=True, slots=True)
class NackResult:
    """What a nack did."""

    dead: bool
    """True if the job ran out of attempts and was dead-lettered."""
    enqueued: list[EnqueueResult]
    """Results of the ``effects_if_dead`` enqueues."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """A settlement for `Client.settle`: acknowledge the job, applying ``effects``."""

    claim: Claim
    """The claim to settle."""
    effects: Effects | None = None
    """Writes applied with the ack."""

    action: Literal["ack"] = field(default="ack", init=False)
    """Always ``"ack"``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Nack:
    """A settlement for `Client.settle`: fail this attempt (retry, or dead-letter at the last)."""

    claim: Claim
    """The claim to settle."""
    error: str
    """Stored as the job's ``last_error``."""
    retry_after: float | None = None
    """The least delay before the retry, in seconds."""
    kv_writes: Mapping[bytes, bytes] = field(default_factory=dict[bytes, bytes])
    """User KV entries written with the nack."""
    effects_if_dead: Effects | None = None
    """Writes applied only if this nack dead-letters the job."""

    action: Literal["nack"] = field(default="nack", init=False)
    """Always ``"nack"``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A settlement for `Client.settle`: dead-letter the job now."""

    claim: Claim
    """The claim to settle."""
    reason: str
    """Stored as the job's ``last_error``."""
    effects: Effects | None = None
    """Writes applied with the dead-lettering."""

    action: Literal["dead"] = field(default="dead", init=False)
    """Always ``"dead"``."""


Settlement = Ack | Nack | DeadLetter
"""One entry of `Client.settle`."""


@dataclass(frozen=True, slots=True)
class SettleResult:
    """The outcome of one entry of `Client.settle`; the entries settle independently."""

    job_id: str
    """The job id."""
    error: Exception | None
    """None if the settlement applied; else the error it would have raised (`ClaimLost`...)."""
    dead: bool = False
    """For a nack: whether it dead-lettered the job."""
    enqueued: list[EnqueueResult] = field(default_factory=list[EnqueueResult])
    """Results of the follow-up enqueues."""

    @property
    def ok(self) -> bool:
        """Whether the settlement applied."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of `Client.list_jobs`."""

    jobs: list[Job]
    """The jobs of this page."""
    next_cursor: bytes | None
    """Pass to the next call to continue; None when the listing is exhausted."""


@dataclass(frozen=True, slots=True)
class KvPage:
    """One page of `Client.kv_scan`."""

    entries: list[tuple[bytes, bytes]]
    """``(key, value)`` pairs in ascending key order."""
    next_cursor: bytes | None
    """Pass to the next call to continue; None when the scan is exhausted."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The queue configuration the server runs with (``GET /v1/config``).

    The per-queue maps are the server's ``QueueConfig`` fields as they travel (durations in
    seconds); the client does not interpret them.
    """

    name: str
    """The store's (server's) name."""
    default: Mapping[str, Any]
    """The configuration of queues without their own."""
    queues: Mapping[str, Mapping[str, Any]]
    """Per-queue configurations."""

    def for_queue(self, queue_name: str) -> Mapping[str, Any]:
        """The configuration ``queue_name`` runs with."""
        return self.queues.get(queue_name, self.default)


@dataclass(frozen=True, slots=True)
class Health:
    """The answer of ``GET /v1/health``."""

    status: str
    """``"ok"`` or ``"degraded"``."""
    name: str
    """The store's name."""
    version: str
    """The server's version."""
    owner: Any
    """The owner record, as the server describes it."""
