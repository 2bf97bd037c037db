"""A job's transitions as data: from its stored record, the time and the cause, the next one.

Theory of operation. A job lives under exactly one record key at a time; a transition
deletes the record it moves the job from and writes the job's next record, in one
transaction with a stats delta (``source`` -1, the new status +1). The functions here are
pure: they take the stored record and return a `Move` (the key and record to write, the
counter the job leaves, and whether the index must be rewritten). The transaction code in
`_recovery.py`, `_settle.py` and `_maintenance.py` reads and fences the source record,
deletes it, and applies the move with `apply`.

=============  =========================  ===================  ==========  ===============
transition      from                       to                   index       applied by
=============  =========================  ===================  ==========  ===============
`abandon`       claimed                    pending, or dead     kept        reaper, open
                                           (attempts used up)               recovery
`retry`         claimed                    pending (no delay)   kept        nack
                                           or scheduled         rewritten
`dead_letter`   claimed                    dead                 kept        nack, dead_letter
`promote`       scheduled (due)            pending              rewritten   scheduler
`wake`          scheduled                  pending, woken       rewritten   wake_scheduled
`revive`        dead                       pending, attempts 0  rewritten   requeue_dead_job
=============  =========================  ===================  ==========  ===============

Attempt history. Every transition out of a claim, and `revive`, ends with a `JobAttempt`
that `apply` writes under the job's next history key (``history_key(id, history_size)``) while
the new record counts one more entry: an append that reads nothing, since the transition has
the record in hand. Whatever removes a job's last record removes its history with it
(`delete_history`, which needs only the record's ``history_size``).

The index is a hint (``docs/design/queue-internals.md``): it is rewritten only when the new
key's fields cannot be implied from the old one. Pending, claimed and dead keys share
(queue, id), so a move between them keeps the index pointing at the pending key (see
`_views.locate`). A move to pending is recorded in the write's `Inserts`, so the claim
cursor learns of the key (and, for a durable write, claims skip it until durable).

Not here: enqueue (a new record, `_enqueue.py`), claim (pending to claimed, `_claims.py`),
ack (claimed to done or deleted, `_settle.py`) and cancel, each written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from ._records import AttemptOutcome, JobAttempt, JobRecord, JobStatus, encode_attempt, encode_job
from ._validate import clamp_time

if TYPE_CHECKING:
    from ._adapter import Transaction
    from ._context import Deltas, Inserts

__all__ = [
    "Move",
    "abandon",
    "apply",
    "dead_letter",
    "delete_history",
    "ended",
    "promote",
    "retry",
    "revive",
    "wake",
]


@dataclass(frozen=True, slots=True)
class Move:
    """A job's next record: where it is written, what it holds, what else changes."""

    key: bytes
    """The record key the job moves to."""
    record: JobRecord
    """The job's new record (its ``status`` names the counter it joins)."""
    source: str
    """The counter (a `JobStatus` value) the job leaves."""
    rewrite_index: bool
    """Whether the index entry must point at ``key`` (else it keeps its pending key)."""
    attempt: JobAttempt | None = None
    """The history entry the move appends (``record.history_size`` already counts it)."""


def ended(
    job: JobRecord, outcome: AttemptOutcome, now: int, error: str | None = None
) -> tuple[JobAttempt, int]:
    """The history entry ending ``job``'s current claim, and the job's history size after it."""
    attempt = JobAttempt(
        attempt=job.attempts,
        outcome=outcome,
        recorded_at=now,
        claimed_at=job.claimed_at,
        error=error,
    )
    return attempt, job.history_size + 1


def dead_letter(job: JobRecord, reason: str, now: int) -> Move:
    """A claimed job to the dead-letter inbox, with ``reason`` as its last error."""
    attempt, size = ended(job, AttemptOutcome.DEAD_LETTERED, now, reason)
    record = job.replace(
        status=JobStatus.DEAD, claimed_at=None, last_error=reason, failed_at=now, history_size=size
    )
    key = keys.dead_key(job.queue_name, job.id)
    return Move(key, record, "claimed", rewrite_index=False, attempt=attempt)


def abandon(job: JobRecord, reason: str, now: int, outcome: AttemptOutcome) -> Move:
    """An abandoned claim (expired lease, dead process) back to pending, or to dead.

    No attempt is consumed (the next claim counts one) and the last error is kept; the history
    records ``outcome`` (`LEASE_EXPIRED` or `INTERRUPTED`). A job out of attempts is
    dead-lettered with ``reason``.
    """
    if job.attempts >= job.max_attempts:
        return dead_letter(job, reason, now)
    attempt, size = ended(job, outcome, now)
    record = job.replace(status=JobStatus.PENDING, claimed_at=None, history_size=size)
    key = keys.pending_key(job.queue_name, job.priority, job.id)
    return Move(key, record, "claimed", rewrite_index=False, attempt=attempt)


def retry(job: JobRecord, error: str, now: int, delay_ms: int) -> Move:
    """A failed attempt of a claimed job: pending at once, or scheduled ``delay_ms`` on.

    The due time is clamped to `MAX_TIMESTAMP_MS`. (A job out of attempts is
    `dead_letter`-ed instead: the caller decides, since that path has its own effects.)
    """
    attempt, size = ended(job, AttemptOutcome.RETRIED, now, error)
    if delay_ms > 0:
        run_at = clamp_time(now + delay_ms)
        record = job.replace(
            status=JobStatus.SCHEDULED,
            claimed_at=None,
            last_error=error,
            run_at=run_at,
            history_size=size,
        )
        key = keys.scheduled_key(run_at, job.queue_name, job.id)
        return Move(key, record, "claimed", rewrite_index=True, attempt=attempt)
    record = job.replace(
        status=JobStatus.PENDING, claimed_at=None, last_error=error, history_size=size
    )
    key = keys.pending_key(job.queue_name, job.priority, job.id)
    return Move(key, record, "claimed", rewrite_index=False, attempt=attempt)


def promote(job: JobRecord) -> Move:
    """A due scheduled job to pending."""
    record = job.replace(status=JobStatus.PENDING, run_at=None)
    key = keys.pending_key(job.queue_name, job.priority, job.id)
    return Move(key, record, "scheduled", rewrite_index=True)


def wake(job: JobRecord, now: int, payload: bytes | None) -> Move:
    """A scheduled job made due now by `Queue.wake_scheduled`, carrying ``payload``.

    ``woken_at`` and ``wake_payload`` stay on the record from then on (None replaces the
    bytes of an earlier wake), so every later delivery of the job sees the same wake.
    """
    record = job.replace(status=JobStatus.PENDING, run_at=None, woken_at=now, wake_payload=payload)
    key = keys.pending_key(job.queue_name, job.priority, job.id)
    return Move(key, record, "scheduled", rewrite_index=True)


def revive(job: JobRecord, now: int) -> Move:
    """A dead job back to pending, as if new: attempts, errors and cancel request cleared."""
    attempt = JobAttempt(attempt=0, outcome=AttemptOutcome.REQUEUED, recorded_at=now)
    record = job.replace(
        status=JobStatus.PENDING,
        attempts=0,
        last_error=None,
        claimed_at=None,
        failed_at=None,
        cancel_requested=False,
        history_size=job.history_size + 1,
    )
    key = keys.pending_key(job.queue_name, job.priority, job.id)
    return Move(key, record, "dead", rewrite_index=True, attempt=attempt)


async def delete_history(txn: Transaction, job: JobRecord) -> None:
    """Stage the deletion of ``job``'s attempt history (with the removal of its last record).

    A point delete per entry, from the record's count: no scan, and nothing at all for a job
    that never failed.
    """
    for seq in range(job.history_size):
        await txn.delete(keys.history_key(job.id, seq))


async def apply(txn: Transaction, move: Move, deltas: Deltas, inserts: Inserts) -> None:
    """Stage ``move`` in ``txn`` (the caller has deleted the source record)."""
    job = move.record
    await txn.put(move.key, encode_job(job))
    if move.attempt is not None:
        await txn.put(keys.history_key(job.id, job.history_size - 1), encode_attempt(move.attempt))
    if move.rewrite_index:
        await txn.put(keys.index_key(job.id), move.key)
    deltas.move(job.queue_name, move.source, job.status.value)
    if job.status is JobStatus.PENDING:
        inserts.add(job.queue_name, move.key)
