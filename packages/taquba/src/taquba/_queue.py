"""The durable queue: `open_queue` and `Queue`.

`Queue` is a facade: it holds the public methods, their signatures and docstrings, and the
open/close lifecycle, and hands the work to one module per concern, all sharing one
`QueueContext` (`_context.py`, whose docstring maps the modules): `_enqueue.py`,
`_claims.py`, `_settle.py` (with `_transitions.py`), `_maintenance.py`, `_recovery.py`,
`_kv.py` and `_views.py`.

This module is over 600 lines (about 720) on purpose: the public docstrings of `Queue` and
`open_queue` are the API reference (rendered by mkdocstrings in source order) and belong on
the methods users call; most method bodies under them are one delegating line, and the rest
is the open/close lifecycle and `open_queue` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, cast

import trio

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _kv as kv
from . import _quarantine as quarantine  # pyright: ignore[reportPrivateUsage]
from . import _recovery as recovery
from . import _views as views
from ._adapter import Database, check_commit_deadline
from ._claims import Claims
from ._clock import Clock, SystemClock
from ._config import QueueConfig
from ._context import QueueContext
from ._enqueue import Enqueuer
from ._errors import (
    Fenced,
    InvalidArgument,
    QueueClosed,
    StorageFatal,
    TaqubaError,
    UsageError,
)
from ._ids import validate_job_id
from ._interrupts import plain_interrupt, plain_interrupts, protect
from ._kv import MAX_KV_VALUE_SIZE as MAX_KV_VALUE_SIZE
from ._maintenance import Maintenance
from ._observe import Observer
from ._owner import DEFAULT_HEARTBEAT_INTERVAL, Heartbeat, OwnerInfo
from ._payload_gc import DEFAULT_PAYLOAD_COLLECT_INTERVAL, DEFAULT_PAYLOAD_GRACE
from ._settle import Settlement
from ._store import DEFAULT_DATABASE, Store
from ._types import (
    CancelOutcome,
    Claim,
    Effects,
    EnqueueRequest,
    EnqueueResult,
    JobPage,
    KvPage,
    NackResult,
    PayloadCollection,
    WakeOutcome,
)
from ._validate import check_optional_seconds, check_seconds, check_type

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncGenerator
    from datetime import datetime

    from ._health import HealthTracker, QueueHealth
    from ._quarantine import QuarantinedRecord
    from ._records import JobAttempt, JobRecord, JobStatus, QueueStats

__all__ = ["MAX_KV_VALUE_SIZE", "Queue", "open_queue"]

log = logging.getLogger("taquba")

_MAX_FLUSH_INTERVAL = 86_400.0  # SlateDB refuses huge ones
_MAX_FLUSH_LINGER = 60.0  # a durable call waits at least this long; longer is a mistake


class Queue:
    """A durable queue database: many named queues in one SlateDB database on a `Store`.

    Open one with `open_queue`. One process owns a store; producers and workers in that
    process share the `Queue` object. All methods must be called from the trio thread that
    opened it.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        config: QueueConfig,
        queues: Mapping[str, QueueConfig],
        clock: Clock,
        flush_interval: float | None,
        reaper_interval: float,
        scheduler_interval: float,
        commit_deadline: float | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        observers: Sequence[Observer] = (),
        flush_linger: float | None = None,
        payload_grace: float = DEFAULT_PAYLOAD_GRACE,
        payload_collect_interval: float = DEFAULT_PAYLOAD_COLLECT_INTERVAL,
    ) -> None:
        """Library-internal: use `open_queue`."""
        context = QueueContext(
            store,
            name,
            config=config,
            queues=queues,
            clock=clock,
            flush_interval=flush_interval,
            commit_deadline=commit_deadline,
            observers=observers,
            flush_linger=flush_linger,
        )
        self._context = context
        self._reaper_interval = reaper_interval
        self._scheduler_interval = scheduler_interval
        self._payload_grace = payload_grace
        self._payload_collect_interval = payload_collect_interval
        self._health: HealthTracker = context.health  # the worker loops report here too
        self._observers = context.observers  # `taquba.count_event` reports here
        self._enqueuer = Enqueuer(context)
        self._claims = Claims(context, owner=self)
        self._settlement = Settlement(context, self._claims)
        self._claims.settlement = self._settlement
        self._maintenance = Maintenance(context)
        self._heartbeat = Heartbeat(context, heartbeat_interval)

    # ------------------------------------------------------------------ properties

    @property
    def clock(self) -> Clock:
        """The clock every timestamp of this queue is read from; layers share it."""
        return self._context.clock

    @property
    def store(self) -> Store:
        """The store the queue database lives in."""
        return self._context.store

    @property
    def name(self) -> str:
        """The database name inside the store."""
        return self._context.name

    def config(self, queue_name: str) -> QueueConfig:
        """The configuration that applies to ``queue_name``."""
        return self._context.config(queue_name)

    def add_observer(self, observer: Observer) -> None:
        """Register ``observer`` (called after those registered before; see `Observer`).

        Raises:
            InvalidArgument: ``observer`` is not an `Observer`.
        """
        check_type("observer", observer, Observer, "an Observer")
        self._context.observers.add(observer)

    @property
    def observers(self) -> Sequence[Observer]:
        """The registered observers, in the order they are called."""
        return self._context.observers.active

    def next_job_id(self) -> str:
        """A fresh monotonic ULID, for callers that must know a job's id before enqueueing it."""
        return self._context.ids.next_id()

    # ------------------------------------------------------------------ lifecycle

    @property
    def _database(self) -> Database:
        return self._context.database

    async def _open(self, *, recover: bool = True) -> None:
        context = self._context
        context.db = await Database.open(
            context.store,
            context.name,
            flush_interval=context.flush_interval,
            commit_deadline=context.commit_deadline,
            flush_linger=context.flush_linger,
        )
        context.db.listener = context
        try:
            await recovery.restore_cursors(context)
            if recover:
                await recovery.recover_claims(context)
            await self._heartbeat.write_at_open()
        except BaseException:
            with trio.CancelScope(shield=True):
                await context.db.close()
            context.db = None
            raise

    async def _close(self) -> None:
        context = self._context
        db = context.db
        if db is None:
            return
        try:
            if context.failure is None and db.close_reason() is None:
                try:
                    await recovery.persist_cursors(context, db)
                except TaqubaError as exc:
                    log.warning("could not persist claim cursors at close: %s", exc)
                await self._heartbeat.remove()  # best effort; logs its own failure
        finally:
            context.db = None
            if context.failure is None:
                context.failure = QueueClosed("the queue has been closed")
            context.stopped.set()
            await db.close()

    @property
    def failure(self) -> TaqubaError | None:
        """Why the queue stopped (`Fenced`, `QueueClosed`, ...), or None while it runs."""
        return self._context.failure

    def health(self) -> QueueHealth:
        """How the queue's loops are faring: whether any is retrying storage errors now.

        Worker loops and the background tasks (reaper, scheduler, stats fold) retry transient
        errors with backoff instead of stopping; a health check can report
        ``not queue.health().healthy`` while they do (see `QueueHealth`).
        """
        return self._health.snapshot(self._context.failure)

    def owner_info(self) -> OwnerInfo:
        """This queue's owner record, as last written (or about to be) by its heartbeat.

        Other processes read it with `QueueReader.owner`; it names this process, its host,
        when it opened the database and, once `set_owner_address` was called, its address.
        """
        return self._heartbeat.info

    def set_owner_address(self, address: str | None) -> None:
        """Advertise where this owner serves its API (e.g. a taquba-server URL), or None.

        The next heartbeat carries it, and one is written promptly (not only at the next
        interval). The ``taquba`` admin commands name it when they refuse to fence a live owner.

        Raises:
            InvalidArgument: ``address`` is not a str or None.
        """
        if address is not None:
            check_type("address", address, str, "a str or None")
        self._heartbeat.set_address(address)

    async def wait_stopped(self) -> None:
        """Wait until the queue is closed or fails (see `failure`)."""
        await self._context.stopped.wait()

    async def _watch(self) -> None:
        db = self._context.db
        if db is None:
            return
        try:
            await db.watch()
        except (Fenced, StorageFatal) as exc:
            self._context.fail(exc)

    async def _reap_and_sweep(self) -> None:
        """One reaper tick."""
        await self.reap_now()
        await self.sweep_now()

    async def _background(
        self,
        maintenance: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        background = self._maintenance
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)  # only watches for fencing; changes nothing
            nursery.start_soon(self._heartbeat.run)  # the owner record (also for admin writers)
            if maintenance:
                nursery.start_soon(
                    background.every, self._reaper_interval, self._reap_and_sweep, "reaper"
                )
                nursery.start_soon(
                    background.every,
                    self._scheduler_interval,
                    self.promote_scheduled_now,
                    "scheduler",
                )
                nursery.start_soon(background.folder, self._scheduler_interval, self.fold_stats_now)
                nursery.start_soon(
                    background.every,
                    self._payload_collect_interval,
                    self.collect_payloads_now,
                    "payload collector",
                )
            task_status.started()

    # ------------------------------------------------------------------ enqueue

    async def enqueue(
        self,
        queue_name: str,
        payload: bytes,
        *,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | None = None,
        dedup_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_attempts: int | None = None,
        job_id: str | None = None,
        kv_writes: Mapping[bytes, bytes] | None = None,
        kv_expect: Mapping[bytes, bytes | None] | None = None,
    ) -> EnqueueResult:
        """Add a job to ``queue_name``; return once it is durable.

        Concurrent enqueues are committed together (see `ack_with`); each keeps its own outcome.
        A cancelled caller gets `trio.Cancelled` only while nothing has been written (before
        its request joins a batch); once in a batch, the enqueue runs to its end and returns
        its result (the caller's next checkpoint raises `Cancelled`). The job becomes
        claimable once durable (see `claim_batch`).

        Args:
            queue_name: the queue's name.
            payload: the job's bytes.
            priority: claim priority (lower first); default the queue's.
            run_at: do not claim before this timezone-aware time (a past time means now).
            delay: do not claim for this many seconds (exclusive with ``run_at``; finite and
                non-negative). A due time past `MAX_TIMESTAMP_MS` is clamped to it.
            dedup_key: if a pending or scheduled job on ``queue_name`` holds this key, write nothing
                and return that job's id with ``created=False``.
            headers: metadata stored with the job.
            max_attempts: override the queue's ``max_attempts``.
            job_id: use this id (1 to 128 of ``[A-Za-z0-9_-]``); `DuplicateJobId` if taken.
            kv_writes: user KV entries written in the same transaction, only if the job is
                created (a dedup hit writes nothing).
            kv_expect: preconditions on user KV entries (``None``: must be absent), checked
                in the same transaction; with ``kv_writes`` this is a compare-and-set that
                commits together with the job. A concurrent change to an expected key makes
                the transaction retry and re-check.

        Raises:
            UsageError: an invalid argument (`InvalidArgument` for a bad number, time or
                type, `InvalidId`, `InvalidQueueName`, ...); nothing was written.
            DuplicateJobId: ``job_id`` names an existing job.
            KvConflict: an entry of ``kv_expect`` did not hold; nothing was written.
        """
        request = EnqueueRequest(
            queue_name=queue_name,
            payload=payload,
            priority=priority,
            run_at=run_at,
            delay=delay,
            dedup_key=dedup_key,
            headers=headers or {},
            max_attempts=max_attempts,
            job_id=job_id,
        )
        return await self._enqueuer.enqueue(request, kv_writes, kv_expect)

    async def enqueue_batch(
        self,
        requests: Sequence[EnqueueRequest],
        *,
        kv_writes: Mapping[bytes, bytes] | None = None,
        kv_expect: Mapping[bytes, bytes | None] | None = None,
    ) -> list[EnqueueResult]:
        """Enqueue several jobs (possibly on several queues) in one transaction.

        All jobs are created together or none is; each request honours its own options (a
        dedup hit is reported per request with ``created=False``). ``kv_writes`` and
        ``kv_expect`` work as in `enqueue` (the writes apply whatever the dedup outcomes).
        Return once durable.

        Raises:
            InvalidArgument: an item is not an `EnqueueRequest` (``argument == "requests"``),
                or one has a bad ``delay``, ``run_at``, ``priority`` or ``max_attempts``;
                nothing was written.
        """
        return await self._enqueuer.enqueue_batch(requests, kv_writes, kv_expect)

    # ------------------------------------------------------------------ claim

    async def claim(self, queue_name: str, *, lease: float | None = None) -> Claim | None:
        """Claim the next job of ``queue_name``, or return None if none is ready.

        The claim commits without waiting for durability: a claim lost in a crash leaves the
        job pending, to be delivered again after recovery.
        """
        claims = await self.claim_batch(queue_name, 1, lease=lease)
        return claims[0] if claims else None

    async def claim_batch(
        self, queue_name: str, max_jobs: int, *, lease: float | None = None
    ) -> list[Claim]:
        """Claim up to ``max_jobs`` jobs of ``queue_name`` in one transaction.

        Jobs come in claim order (priority, then id) and share one lease of ``lease`` seconds
        (default: the queue's ``lease_duration``). Only jobs whose enqueue is durable are
        claimed: a job whose enqueue (or follow-up enqueue, retry or requeue) still waits for
        its WAL flush becomes claimable, and wakes waiting workers, when the flush is done.
        Undecodable pending records met on the way are quarantined (see `quarantined`) and the
        claim goes on past them.

        Raises:
            InvalidArgument: ``max_jobs`` is not an int from 0 to ``2**31 - 1``, or ``lease``
                is not a finite positive number of seconds.
        """
        return await self._claims.claim_batch(queue_name, max_jobs, lease)

    @plain_interrupts
    async def wait_for_jobs_on(self, queue_name: str) -> None:
        """Wait until a job may be claimable on ``queue_name``.

        Wakes one waiter per inserted job. A wakeup is a hint, not a promise: another worker
        may claim the job first. Bound the wait with `trio.move_on_after`. Raises the queue's
        failure (`Fenced`, `QueueClosed`) if it stops while waiting.
        """
        await self._claims.wait_for_jobs_on(queue_name)

    async def claim_with_wait(self, queue_name: str, *, lease: float | None = None) -> Claim:
        """Claim the next job of ``queue_name``, waiting as long as it takes.

        Bound it with `trio.move_on_after`: a lost race for a job does not end the wait. A
        claim that fills its batch passes one wakeup on, so a backlog keeps waking workers.
        """
        while True:
            claim = await self.claim(queue_name, lease=lease)
            if claim is not None:
                return claim
            await self.wait_for_jobs_on(queue_name)

    # ------------------------------------------------------------------ settlement

    async def ack(self, claim: Claim) -> None:
        """Acknowledge a claimed job as done; return once durable.

        Raises:
            ClaimLost: the claim is gone (lease expired and the job was requeued, or already
                settled); nothing was written.
        """
        await self.ack_with(claim, None)

    async def ack_with(self, claim: Claim, effects: Effects | None) -> list[EnqueueResult]:
        """Acknowledge a claimed job and apply ``effects`` in the same transaction.

        Either the ack and every effect commit together, or nothing does: when the claim is
        gone this raises `ClaimLost` and applies nothing, so a chained job exists only if the
        settlement that created it won. Returns one result per follow-up enqueue; returns once
        durable.

        Concurrent acks are committed together: while one batch waits for its WAL flush the
        next accumulates, and each ack still succeeds or fails on its own (`ClaimLost`,
        `DuplicateJobId` from a follow-up). Once started, an ack runs to its end even if the
        caller is cancelled meanwhile, so its outcome is always known.

        Raises:
            ClaimLost: the claim is gone; nothing was written.
            KvConflict: an entry of ``effects.kv_expect`` did not hold; nothing was written
                and the claim is still held (settle it again).
        """
        return await self._settlement.ack_with(claim, effects)

    async def nack(
        self,
        claim: Claim,
        error: str,
        *,
        retry_after: float | None = None,
        kv_writes: Mapping[bytes, bytes] | None = None,
        effects_if_dead: Effects | None = None,
    ) -> NackResult:
        """Report a failed attempt: retry with backoff, or dead-letter when attempts run out.

        The retry delay is ``retry_backoff_base * 2**(attempt - 1)``, capped at
        ``retry_backoff_max``, or ``retry_after`` seconds if that is longer (e.g. an HTTP
        ``Retry-After``); a zero delay makes the job pending again at once.

        Args:
            claim: the claim to settle.
            error: recorded as the job's ``last_error``.
            retry_after: the least delay before the retry, in seconds (finite, non-negative;
                a due time past `MAX_TIMESTAMP_MS` is clamped to it).
            kv_writes: user KV entries written in the nack's transaction, whichever way it
                goes (e.g. a record of the failed attempt).
            effects_if_dead: applied atomically only if this nack dead-letters the job (a
                retried job must not fan out follow-ups on every attempt).

        Raises:
            ClaimLost: the claim is gone; nothing was written.
            InvalidArgument: a bad ``retry_after``; nothing was written.
            KvConflict: the nack dead-letters the job and an entry of
                ``effects_if_dead.kv_expect`` did not hold; nothing was written and the
                claim is still held. (A nack that retries does not check them.)
        """
        return await self._settlement.nack(claim, error, retry_after, kv_writes, effects_if_dead)

    async def dead_letter(
        self, claim: Claim, reason: str, *, effects: Effects | None = None
    ) -> list[EnqueueResult]:
        """Move a claimed job to the dead-letter inbox at once (no retry).

        ``effects`` commit atomically with the dead-letter; returns one result per follow-up
        enqueue.

        Raises:
            ClaimLost: the claim is gone; nothing was written.
            KvConflict: an entry of ``effects.kv_expect`` did not hold; nothing was written
                and the claim is still held.
        """
        return await self._settlement.dead_letter(claim, reason, effects)

    def renew_lease(self, claim: Claim, extension: float) -> int:
        """Set the claim's lease to expire ``extension`` seconds from now; return the new expiry.

        No write happens: leases are process state. May shorten the lease. ``extension`` must
        be a finite positive number of seconds; an expiry past `MAX_TIMESTAMP_MS` is clamped.

        Raises:
            ClaimLost: the claim no longer holds its lease.
            InvalidArgument: a bad ``extension``.
        """
        return self._claims.renew_lease(claim, extension)

    def lease_expiry(self, claim: Claim) -> int | None:
        """When the claim's lease expires (ms since the epoch), or None if it is gone."""
        return self._claims.lease_expiry(claim)

    async def requeue_dead_job(self, job: JobRecord) -> None:
        """Revive a dead-lettered job as pending, with its attempts reset.

        Raises:
            InvalidState: ``job`` is not a dead record.
            JobNotFound: its dead record no longer exists (e.g. swept by retention).
        """
        await self._settlement.requeue_dead_job(job)

    async def purge(self, queue_name: str, status: JobStatus) -> int:
        """Delete every job of ``queue_name`` in a terminal status; return how many.

        ``status`` is `JobStatus.DEAD` (empty the dead-letter inbox) or `JobStatus.DONE` (the
        kept done records). Jobs are deleted with their index entries, a page per transaction,
        so a big purge is many small writes rather than one huge one; the call returns once
        every page is durable. A job that leaves the status meanwhile (a dead job requeued) is
        skipped, and one that enters it during the purge may be left. Counters stay equal to a
        recount: ``dead`` drops by the jobs purged, while ``done`` is cumulative and does not
        change. Undecodable records met on the way are quarantined, as by the retention sweeps.

        Raises:
            InvalidArgument: ``status`` is not `JobStatus.DEAD` or `JobStatus.DONE`.
            InvalidQueueName: a bad ``queue_name``.
        """
        return await self._maintenance.purge(queue_name, status)

    # ------------------------------------------------------------------ cancel and wait

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job.

        A pending or scheduled job is deleted (`CancelOutcome.REMOVED`). A claimed job is
        marked, and its handler's cancel signal fires (`CancelOutcome.REQUESTED`): the handler
        decides how to stop, and settles the claim as usual.
        """
        return await self._settlement.cancel(job_id)

    async def wake_scheduled(self, job_id: str, payload: bytes | None = None) -> WakeOutcome:
        """Make a scheduled job due now, optionally handing it ``payload``.

        The job moves to pending at once (`WakeOutcome.WOKEN`) with ``woken_at`` and
        ``wake_payload`` set on its record; they stay there for the rest of the job's life, so
        every later delivery (a retry, a redelivery after a crash) sees the same wake. A later
        wake (once the job is scheduled again, say for a retry's backoff) replaces the payload,
        and None clears it. A job that is not scheduled any more gives
        `WakeOutcome.NOT_SCHEDULED`, an unknown id `WakeOutcome.NOT_FOUND`. Durable when it
        returns; of a wake racing the scheduler's promotion or a cancel, exactly one wins.

        This is the primitive of durable signals: a job scheduled far ahead as a deadline is
        woken early with the signal's payload.

        Raises:
            InvalidId: a malformed ``job_id``.
            UsageError: ``payload`` is neither bytes nor None.
        """
        return await self._settlement.wake_scheduled(job_id, payload)

    @plain_interrupts
    async def wait_for_completion(self, job_id: str) -> JobRecord | None:
        """Wait until the job is done, dead, or gone.

        Returns the done or dead record if one is kept, else None (acknowledged without
        ``keep_done``, or cancelled). Bound the wait with `trio.move_on_after`. Only this
        job's own settlement wakes the wait, so many concurrent waiters stay cheap. A live job
        whose offloaded object is missing (`PayloadMissing` from `get_job`) is waited for
        until its claim dead-letters it, and returned with an empty payload (as `get_job`
        reads it).

        Raises:
            JobNotFound: no job with this id exists when the wait starts.
        """
        return await self._settlement.wait_for_completion(job_id, self.get_job)

    # ------------------------------------------------------------------ inspection

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job's current record in any state, or None if it does not exist."""
        validate_job_id(job_id)
        return await self._context.payloads.read_job(lambda: self._locate(job_id))

    async def _locate(self, job_id: str) -> tuple[bytes, bytes] | None:
        """The key and stored bytes of the job's current record, read from one snapshot."""
        txn = await self._database.begin()
        try:
            return await views.locate(txn, job_id)
        finally:
            await txn.rollback()

    async def get_job_history(self, job_id: str) -> list[JobAttempt] | None:
        """How each attempt of the job ended, oldest first; None if no job has this id.

        One `JobAttempt` per end of an attempt (retried, dead-lettered, lease expired,
        interrupted by a restart, or completed where done jobs are kept) and per requeue from
        the dead-letter inbox; a job that succeeded at its first attempt and is not kept has
        none. The history lives as long as the job's record: removing the job (ack without
        retention, cancel, retention sweeps, purge) removes it. Read from one snapshot.
        """
        validate_job_id(job_id)
        txn = await self._database.begin()
        try:
            return await views.job_history(txn, job_id)
        finally:
            await txn.rollback()

    async def stats(self, queue_name: str) -> QueueStats:
        """The counters of ``queue_name``; they always equal a recount of its records."""
        keys.validate_queue_name(queue_name)
        floor = self._context.delta_seqs.floor(queue_name)  # before the snapshot: see DeltaSeqs
        txn = await self._database.begin()
        try:
            return (await views.read_stats(txn, queue_name, floor))[1]
        finally:
            await txn.rollback()

    async def list_queues(self) -> list[str]:
        """Every queue that has ever held a job, sorted by name."""
        return await views.list_queue_names(self._database)

    async def list_jobs(
        self,
        queue_name: str,
        status: JobStatus,
        *,
        cursor: bytes | None = None,
        limit: int = 100,
        payloads: bool = True,
    ) -> JobPage:
        """One page of ``queue_name``'s jobs in ``status``.

        Pending jobs come in claim order, claimed and dead jobs in id order, scheduled jobs by
        due time and done jobs by completion time. Pass ``next_cursor`` back to continue. The
        listing is not a snapshot: jobs may move between pages.

        ``payloads=False`` skips reading offloaded payloads (one object read per job): such
        jobs come back with an empty ``payload`` and their ``payload_ref``, for a view that
        shows everything but the payload.
        """
        page = await views.list_jobs_page(self._database, queue_name, status, cursor, limit)
        if not payloads:
            return page
        return await self._context.payloads.read_page(page, self._locate)

    async def dead_jobs(
        self, queue_name: str, *, after: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Dead-lettered jobs of ``queue_name`` in id order, starting after the id ``after``.

        ``list_jobs(queue_name, JobStatus.DEAD, payloads=False)`` lists them without reading
        offloaded payloads.
        """
        jobs = await views.dead_jobs(self._database, queue_name, after, limit)
        return await self._context.payloads.read_jobs(jobs, self._locate)

    # ------------------------------------------------------------------ user KV

    async def kv_get(self, key: bytes) -> bytes | None:
        """The value stored under ``key`` in the user namespace, or None."""
        return await kv.get(self._database, key)

    async def kv_put(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``; return once durable."""
        await kv.put(lambda: self._database, key, value)

    async def kv_delete(self, key: bytes) -> None:
        """Delete ``key`` (no error if absent); return once durable."""
        await kv.delete(self._database, key)

    async def kv_compare_and_set(
        self, key: bytes, expected: bytes | None, new: bytes | None
    ) -> bool:
        """Atomically replace ``key``'s value if it currently equals ``expected``.

        ``expected=None`` means "must be absent"; ``new=None`` deletes. Returns whether the
        write happened; durable when it did.
        """
        return await kv.compare_and_set(lambda: self._database, key, expected, new)

    async def kv_scan(
        self, prefix: bytes = b"", *, cursor: bytes | None = None, limit: int = 100
    ) -> KvPage:
        """Entries of the user namespace whose keys start with ``prefix``, in key order."""
        return await views.kv_scan_page(self._database, prefix, cursor, limit)

    # ------------------------------------------------------------------ quarantine

    async def quarantined(
        self, queue_name: str, *, after: bytes | None = None, limit: int = 100
    ) -> list[QuarantinedRecord]:
        """Records of ``queue_name`` that could not be decoded and were moved aside.

        A claim, promotion, reap, sweep or fold that meets an undecodable record moves it,
        with its raw bytes and original key, out of the way instead of failing (and logs a
        warning once), so the rest of the queue keeps going; `QueueStats.quarantined` counts
        them. Records come in original-key order; pass the last one's ``key`` as ``after`` to
        continue. Write a repaired record back under its ``key`` to recover a job.
        """
        keys.validate_queue_name(queue_name)
        if not isinstance(limit, int) or limit < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("limit must be a non-negative int")
        if limit == 0:
            return []
        return await quarantine.list_page(self._database, queue_name, after, limit)

    # ------------------------------------------------------------------ background work

    async def reap_now(self) -> int:
        """Requeue (or dead-letter) every claim whose lease has expired; return how many."""
        return await self._maintenance.reap_now()

    async def promote_scheduled_now(self) -> int:
        """Make every scheduled job whose time has come pending; return how many.

        Cheap when idle: the scheduled space is read only once its earliest due time has come,
        and from that time on, not through the tombstones earlier promotions left (see
        ``docs/design/queue-internals.md``). Concurrent calls run one after the other, so when
        one returns every job due at its start has been promoted.
        """
        return await self._maintenance.promote_scheduled_now()

    async def sweep_now(self) -> int:
        """Delete done and dead records whose retention has passed; return how many.

        Each space is read only once its earliest retained record can have expired (known
        from the last pass and from the acks and dead-letters made since), so a large inbox is
        not reread on every reaper tick. Done records are keyed by completion time: a pass
        starts at the oldest record it kept last time (not at the tombstones of the ones it
        deleted) and stops where even the shortest ``keep_done`` has not run out. Dead records
        are keyed by queue and id, so a dead pass reads the whole dead space.
        """
        return await self._maintenance.sweep_now()

    async def fold_stats_now(self) -> None:
        """Fold accumulated counter deltas into each queue's totals (keeps `stats` cheap)."""
        await self._maintenance.fold_stats_now()

    async def collect_payloads_now(self, *, grace: float | None = None) -> PayloadCollection:
        """Delete the orphaned objects of offloaded payloads; return what it found.

        An orphan is an object of the payload directory (`QueueConfig.payload_offload_threshold`)
        that no job record references, left by a crash between the commit that removed its
        job and the delete that follows, or by a delete that failed. An object is deleted
        only if its ref (a ULID, made when its enqueue began) is older than ``grace`` and
        no record in any status (pending, scheduled, claimed, dead, kept done, quarantined)
        nor an enqueue still in flight references it, all read from one snapshot of the
        database. Names that are not refs are left alone and logged. When no object is old
        enough, it costs one listing of the directory and reads no record. Concurrent calls
        run one after the other.

        While the queue is open with maintenance, this runs in the background every
        ``payload_collect_interval`` (`open_queue`), whether or not offload is configured
        now: a queue that offloaded earlier may still hold orphans.

        Args:
            grace: seconds an object must have existed before it may be deleted (finite,
                >= 0); default the queue's ``payload_grace`` (`open_queue`, an hour). It
                guards enqueues whose commit outcome was unknown and that land late; see
                ``_payload_gc.py`` for the full argument.

        Returns:
            The counts of what was listed, deleted and kept (`PayloadCollection`).

        Raises:
            InvalidArgument: ``grace`` is not a finite number >= 0.
            StorageError: listing the objects or reading the records failed (a failed
                delete is counted in `PayloadCollection.failed` instead).
        """
        seconds = self._payload_grace if grace is None else check_seconds("grace", grace)
        return await self._maintenance.collect_payloads_now(seconds)


def _check_open_arguments(config: object, queues: object, clock: object) -> None:
    """Type-check `open_queue`'s objects up front (a dict for a config fails late otherwise)."""
    if config is not None:
        check_type("config", config, QueueConfig, "a QueueConfig")
    if queues is not None:
        check_type("queues", queues, Mapping, "a mapping of queue names to QueueConfig")
        for queue_name, queue_config in cast("Mapping[object, object]", queues).items():
            keys.validate_queue_name(queue_name)
            check_type(f"queues[{queue_name!r}]", queue_config, QueueConfig, "a QueueConfig")
    if clock is not None:
        check_type("clock", clock, Clock, "a Clock (an object with now_ms())")


@asynccontextmanager
async def open_queue(
    store: Store | str | os.PathLike[str],
    name: str = DEFAULT_DATABASE,
    *,
    config: QueueConfig | None = None,
    queues: Mapping[str, QueueConfig] | None = None,
    clock: Clock | None = None,
    flush_interval: float | None = None,
    flush_linger: float | None = None,
    reaper_interval: float = 5.0,
    scheduler_interval: float = 1.0,
    commit_deadline: float | None = None,
    maintenance: bool = True,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    observers: Sequence[Observer] = (),
    payload_grace: float = DEFAULT_PAYLOAD_GRACE,
    payload_collect_interval: float = DEFAULT_PAYLOAD_COLLECT_INTERVAL,
) -> AsyncGenerator[Queue]:
    """Open (creating if needed) the queue database ``name`` in ``store``.

    On open, claims left behind by a process that died are requeued (or dead-lettered when
    out of attempts), and the claim-scan state saved by the last clean close is restored.
    While open, background tasks reap expired leases, promote due scheduled jobs, sweep
    retained done/dead records, fold counters and collect orphaned payload objects (all of
    it, and the claim recovery, only with ``maintenance``, the default). On exit the
    claim-scan state is saved and the database is shut down.

    Args:
        store: a `Store`, or a URL/path for `Store.from_url`.
        name: the database name inside the store.
        config: the configuration of queues not listed in ``queues``.
        queues: per-queue configuration, by queue name (whole objects, not merged).
        clock: the time source (default `SystemClock`); layers share it via `Queue.clock`.
        flush_interval: SlateDB's WAL flush interval in seconds (default 0.1, at most a day):
            the backstop that makes writes durable when nobody waits for them. A durable
            operation does not wait for it: it requests a WAL flush (see ``flush_linger``).
        flush_linger: seconds a requested WAL flush waits for other writes to share it
            (default by store kind: 0 for memory and local disk, 0.01 on S3, where each flush
            is a billed request). One flush is in flight at a time and writes that arrive
            meanwhile share the next one, so a lone write is durable after about one
            object-store write and a busy queue still batches; a longer linger trades latency
            for fewer requests (see the performance guide).
        reaper_interval: seconds between lease reaping and retention sweeps.
        scheduler_interval: seconds between promotions of due scheduled jobs.
        commit_deadline: seconds a write and its durability wait may take before it fails
            with `StorageUnavailable` and an unknown outcome. The default outlasts the
            store's own retry budget (873 s with the default ``max_retries=3``: four
            object-store attempts of at most 210 s each, three 1 s backoffs and a 30 s
            margin), so a failing store normally answers first. A job whose enqueue outcome
            is unknown is never hidden: if it was written, it is claimable.
        maintenance: False opens the queue for administration: it changes only what its
            caller asks for. No claims are recovered at open, and no background task reaps
            leases, promotes scheduled jobs, sweeps kept done/dead records (retention) or
            folds counters; the explicit `reap_now`, `promote_scheduled_now`, `sweep_now`
            and `fold_stats_now` still work. The next queue opened with maintenance (the
            default) catches up on all of it. Fencing is still watched, and the owner record
            is still written.
        heartbeat_interval: seconds between two writes of the owner record (`OwnerInfo`,
            default 5). The record is written at open, refreshed every interval and deleted at
            a clean close; other processes (`QueueReader.owner`, the ``taquba`` admin commands)
            take the owner for alive while its last heartbeat is at most three intervals old.
        observers: `Observer` instances the queue reports its events to (metrics, traces);
            more can be added with `Queue.add_observer`.
        payload_grace: seconds an offloaded payload's object must have existed before
            `Queue.collect_payloads_now` may delete it as an orphan (default an hour, well
            past the default ``commit_deadline``; keep it longer than ``commit_deadline``).
        payload_collect_interval: seconds between two background collections of orphaned
            payload objects (default an hour; with ``maintenance`` only).

    Raises:
        InvalidArgument: an argument of the wrong type (e.g. a dict for ``config``) or a bad
            interval (intervals are finite positive seconds); nothing was opened.
        StorageUnavailable: the store could not be reached in bounded time.
        Fenced: inside the block, if another process opens the same store as writer; every
            operation and worker loop then fails with it.
    """
    if not isinstance(store, Store):
        store = Store.from_url(store)
    keys.validate_queue_name(name)
    _check_open_arguments(config, queues, clock)
    reaper_interval = check_seconds("reaper_interval", reaper_interval, positive=True)
    scheduler_interval = check_seconds("scheduler_interval", scheduler_interval, positive=True)
    heartbeat_interval = check_seconds("heartbeat_interval", heartbeat_interval, positive=True)
    payload_grace = check_seconds("payload_grace", payload_grace)
    payload_collect_interval = check_seconds(
        "payload_collect_interval", payload_collect_interval, positive=True
    )
    flush_interval = check_optional_seconds("flush_interval", flush_interval, positive=True)
    if flush_interval is not None and flush_interval > _MAX_FLUSH_INTERVAL:
        raise InvalidArgument(
            "flush_interval", flush_interval, f"must be at most {_MAX_FLUSH_INTERVAL:g} seconds"
        )
    flush_linger = check_optional_seconds("flush_linger", flush_linger, positive=False)
    if flush_linger is not None and flush_linger > _MAX_FLUSH_LINGER:
        raise InvalidArgument(
            "flush_linger", flush_linger, f"must be at most {_MAX_FLUSH_LINGER:g} seconds"
        )
    if commit_deadline is not None:
        commit_deadline = check_commit_deadline(commit_deadline)
    observers = list(observers)
    for observer in observers:
        check_type("observers", observer, Observer, "Observer instances")
    queue = Queue(
        store,
        name,
        config=config or QueueConfig(),
        queues=queues or {},
        clock=clock or SystemClock(),
        flush_interval=flush_interval,
        reaper_interval=reaper_interval,
        scheduler_interval=scheduler_interval,
        commit_deadline=commit_deadline,
        heartbeat_interval=heartbeat_interval,
        observers=observers,
        flush_linger=flush_linger,
        payload_grace=payload_grace,
        payload_collect_interval=payload_collect_interval,
    )
    await queue._open(recover=maintenance)  # pyright: ignore[reportPrivateUsage]
    body_error: BaseException | None = None
    try:
        with plain_interrupt():
            async with trio.open_nursery() as nursery:
                await nursery.start(queue._background, maintenance)  # pyright: ignore[reportPrivateUsage]
                try:
                    yield queue
                except BaseException as exc:  # re-raised below, outside the nursery
                    body_error = exc
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await queue._close()  # pyright: ignore[reportPrivateUsage]
    if body_error is not None:
        raise body_error


# Ctrl-C must never stop the queue's own code halfway (see taquba._interrupts).
protect(Queue, open_queue)
