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
`revive`        dead                       pending, attempts 0  rewritten   requeue_dead_job
=============  =========================  ===================  ==========  ===============

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
from ._records import JobRecord, JobStatus, encode_job
from ._validate import clamp_time

if TYPE_CHECKING:
    from ._adapter import Transaction
    from ._context import Deltas, Inserts

__all__ = ["Move", "abandon", "apply", "dead_letter", "promote", "retry", "revive"]


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


def dead_letter(job: JobRecord, reason: str, now: int) -> Move:
    """A claimed job to the dead-letter inbox, with ``reason`` as its last error."""
    record = job.replace(status=JobStatus.DEAD, claimed_at=None, last_error=reason, failed_at=now)
    return Move(keys.dead_key(job.queue_name, job.id), record, "claimed", rewrite_index=False)


def abandon(job: JobRecord, reason: str, now: int) -> Move:
    """An abandoned claim (expired lease, dead process) back to pending, or to dead.

    No attempt is consumed (the next claim counts one) and the last error is kept; a job out
    of attempts is dead-lettered with ``reason``.
    """
    if job.attempts >= job.max_attempts:
        return dead_letter(job, reason, now)
    record = job.replace(status=JobStatus.PENDING, claimed_at=None)
    key = keys.pending_key(job.queue_name, job.priority, job.id)
    return Move(key, record, "claimed", rewrite_index=False)


def retry(job: JobRecord, error: str, now: int, delay_ms: int) -> Move:
    """A failed attempt of a claimed job: pending at once, or scheduled ``delay_ms`` on.

    The due time is clamped to `MAX_TIMESTAMP_MS`. (A job out of attempts is
    `dead_letter`-ed instead: the caller decides, since that path has its own effects.)
    """
    if delay_ms > 0:
        run_at = clamp_time(now + delay_ms)
        record = job.replace(
            status=JobStatus.SCHEDULED, claimed_at=None, last_error=error, run_at=run_at
        )
        key = keys.scheduled_key(run_at, job.queue_name, job.id)
        return Move(key, record, "claimed", rewrite_index=True)
    record = job.replace(status=JobStatus.PENDING, claimed_at=None, last_error=error)
    key = keys.pending_key(job.queue_name, job.priority, job.id)
    return Move(key, record, "claimed", rewrite_index=False)


def promote(job: JobRecord) -> Move:
    """A due scheduled job to pending."""
    record = job.replace(status=JobStatus.PENDING, run_at=None)
    key = keys.pending_key(job.queue_name, job.priority, job.id)
    return Move(key, record, "scheduled", rewrite_index=True)


def revive(job: JobRecord) -> Move:
    """A dead job back to pending, as if new: attempts, errors and cancel request cleared."""
    record = job.replace(
        status=JobStatus.PENDING,
        attempts=0,
        last_error=None,
        claimed_at=None,
        failed_at=None,
        cancel_requested=False,
    )
    key = keys.pending_key(job.queue_name, job.priority, job.id)
    return Move(key, record, "dead", rewrite_index=True)


async def apply(txn: Transaction, move: Move, deltas: Deltas, inserts: Inserts) -> None:
    """Stage ``move`` in ``txn`` (the caller has deleted the source record)."""
    job = move.record
    await txn.put(move.key, encode_job(job))
    if move.rewrite_index:
        await txn.put(keys.index_key(job.id), move.key)
    deltas.move(job.queue_name, move.source, job.status.value)
    if job.status is JobStatus.PENDING:
        inserts.add(job.queue_name, move.key)
