"""Background work: reaping expired leases, promoting due jobs, retention sweeps, stats fold.

Each task has an explicit entry point on `Queue` (`reap_now`, `promote_scheduled_now`,
`sweep_now`, `fold_stats_now`, `collect_payloads_now`) and runs in the background while a
queue is open with maintenance (`Maintenance.every`, `Maintenance.folder`, started by `Queue`).

Theory of operation.

- Reaper: every lease past its expiry is taken out of the registry (so no settlement can
  use it), then its claim is ended by `_recovery.end_claims` a page per transaction, which
  re-checks that the lease is still the expired one. A still-running handler is told its
  delivery is over. A failed page gives its leases back, to be reaped on a later tick.
- Promotion, done sweep and dead sweep scan time-ordered spaces from a low-water `Mark`
  (``docs/design/queue-internals.md``, "Low-water marks"): a tick before the mark's due
  time reads nothing, a pass reads from its start time, past the tombstones of earlier
  passes. A pass clears its mark when it begins and rebuilds it from what it keeps; a
  failed pass restores the start. Passes of one kind run one at a time.
- Each promotion is its own non-durable transaction (`_transitions.promote`): the scheduled
  record was durable, so the job survives a crash either way.
- Sweeps delete expired done and dead records (and their index entries) a page per
  transaction, then (after a flush) the offloaded payload objects of the jobs removed; fold
  adds the stats delta records of a queue into its totals.
- The payload collector deletes orphaned payload objects (`taquba._payload_gc`, whose
  docstring argues why no live job loses its object), one collection at a time.
- Only `Fenced` and `StorageFatal` (which stop the queue) and `QueueClosed` end a
  background task; any other error is logged, shown by `Queue.health`, and retried.
- Undecodable records met on the way are quarantined, never a reason to stop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _quarantine as quarantine  # pyright: ignore[reportPrivateUsage]
from . import _transitions as transitions
from ._adapter import Database, Transaction, run_transaction
from ._context import Deltas, QueueContext
from ._errors import DataError, Fenced, InvalidArgument, QueueClosed, StorageError, StorageFatal
from ._interrupts import protect
from ._payload_gc import collect
from ._records import AttemptOutcome, JobRecord, JobStatus, decode_job, encode_map
from ._recovery import end_claims
from ._validate import duration_ms, retention_ms
from ._views import (
    SCAN_PAGE,
    STATS_FIELDS,
    decode_counts,
    decode_delta,
    locate,
    queues_in,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ._types import PayloadCollection

__all__ = ["Maintenance"]

log = logging.getLogger("taquba")

_KEY_TIME_END = 2**64 - 1
FOLD_ROWS = 256
"""Stats deltas folded per transaction: its commit is one synchronous step of the event loop."""
FOLD_YIELD_EVERY = 8
"""Deltas a fold deletes between two checkpoints (the fold is background work)."""


def _key_queue(key: bytes) -> str | None:
    """The queue a job key names, or None if it does not parse."""
    try:
        return keys.parse_job_key(key).queue
    except (ValueError, UnicodeDecodeError):
        return None


class Maintenance:
    """The background work of one open queue (see the module docstring)."""

    def __init__(self, context: QueueContext) -> None:
        self._context = context
        self._promote_lock = trio.Lock()
        self._sweep_lock = trio.Lock()
        self._collect_lock = trio.Lock()
        self._discovered = False  # a fold found the deltas earlier processes left

    # ------------------------------------------------------------------ reaper

    async def reap_now(self) -> int:
        """`Queue.reap_now`."""
        context = self._context
        context.database  # noqa: B018 - raises if the queue is closed or failed
        due = list(context.leases.take_due(context.clock.now_ms()))
        reaped = 0
        for start in range(0, len(due), SCAN_PAGE):
            page = due[start : start + SCAN_PAGE]
            try:
                reaped += await self._reap_page(page)
            except (DataError, StorageError) as exc:
                if isinstance(exc, (Fenced, StorageFatal, QueueClosed)):
                    raise
                log.error("could not reap %d expired claims: %s", len(page), exc)
                for queue, job_id, token in page:
                    context.leases.release_reaping(queue, job_id, token)
        if context.observers.active:
            context.observers.emit("reaped", lambda o: o.reaped(reaped))
        return reaped

    async def _reap_page(self, page: Sequence[tuple[str, str, int]]) -> int:
        leases = self._context.leases

        def still_held(queue: str, job_id: str, token: int) -> Callable[[], bool]:
            def check() -> bool:
                entry = leases.lookup(queue, job_id)
                return entry is not None and entry.token == token

            return check

        moved = await end_claims(
            self._context,
            [
                (keys.claimed_key(queue, job_id), still_held(queue, job_id, token))
                for queue, job_id, token in page
            ],
            reason="lease expired",
            ended=AttemptOutcome.LEASE_EXPIRED,
        )
        for queue, job_id, token in page:
            entry = leases.lookup(queue, job_id)
            if entry is not None and entry.token == token:
                entry.cancel.fire()  # tell a still-running handler its delivery is over
            leases.remove(queue, job_id, token)
        return sum(moved)

    # ------------------------------------------------------------------ promotion

    async def promote_scheduled_now(self) -> int:
        """`Queue.promote_scheduled_now`."""
        context = self._context
        db = context.database
        async with self._promote_lock:
            now = context.clock.now_ms()
            mark = context.promote_mark
            start = mark.begin(now)
            if start is None:
                return 0
            try:
                promoted = await self._promote_due(db, start, now)
            except BaseException:
                mark.abort(start)
                raise
        if context.observers.active:
            context.observers.emit("promoted", lambda o: o.promoted(promoted))
        return promoted

    async def _promote_due(self, db: Database, start: int, now: int) -> int:
        """Promote the scheduled keys from ``start`` to ``now`` (ms); re-mark the next one."""
        prefix = keys.space_prefix(keys.Space.SCHEDULED)
        first = prefix + start.to_bytes(8, "big")
        end = prefix + (now + 1).to_bytes(8, "big")
        promoted = 0
        inclusive = True
        while True:
            rows = await db.scan(
                prefix, start=first, start_inclusive=inclusive, end=end, limit=SCAN_PAGE
            )
            for key, _ in rows:
                if await self._promote_one(db, key):
                    promoted += 1
            if len(rows) < SCAN_PAGE:
                break
            first, inclusive = rows[-1][0], False
        # Keys due later were not looked at: mark the earliest one (one key read).
        later = await db.scan(prefix, start=end, limit=1)
        if later:
            run_at = keys.key_time(later[0][0])
            self._context.promote_mark.note(run_at, run_at)
        return promoted

    async def _promote_one(self, db: Database, key: bytes) -> bool:
        context = self._context
        result: list[tuple[str, bytes]] = []
        # Not held: the scheduled record was durable, so the job survives a crash either way.
        inserts = context.inserts(hold=False)
        bad: list[quarantine.Moved] = []

        async def body(txn: Transaction) -> None:
            result.clear()
            bad.clear()
            raw = await txn.get(key)
            if raw is None:
                return
            try:
                job = decode_job(raw)
            except DataError as exc:  # one bad record must not stop every promotion tick
                deltas = Deltas()
                bad.append(await context.stage_quarantine(txn, key, raw, exc, deltas))
                await deltas.stage(txn, context.delta_seqs)
                return
            move = transitions.promote(job)
            await txn.delete(key)
            deltas = Deltas()
            await transitions.apply(txn, move, deltas, inserts)
            await deltas.stage(txn, context.delta_seqs)
            result.append((job.queue_name, move.key))

        try:
            await run_transaction(db, body, durable=False)
        finally:
            inserts.finish()  # also when the outcome is unknown
        context.quarantined(bad)
        if not result:
            return False
        context.count_deltas(result[0][0])
        return True

    # ------------------------------------------------------------------ retention sweeps

    async def sweep_now(self) -> int:
        """`Queue.sweep_now`."""
        context = self._context
        db = context.database
        async with self._sweep_lock:
            now = context.clock.now_ms()
            configs = [context.default_config, *context.configs.values()]
            swept = 0
            keeps = [ms for c in configs if (ms := retention_ms(c.keep_done)) is not None]
            if keeps:
                swept += await self._sweep_space(db, now, JobStatus.DONE, min(keeps))
            if any(retention_ms(c.dead_retention) is not None for c in configs):
                swept += await self._sweep_space(db, now, JobStatus.DEAD, None)
        if context.observers.active:
            context.observers.emit("swept", lambda o: o.swept(swept))
        return swept

    async def _sweep_space(
        self, db: Database, now: int, status: JobStatus, shortest: int | None
    ) -> int:
        """One retention pass over the done or dead space, if its mark says one is due."""
        context = self._context
        mark = context.done_mark if status is JobStatus.DONE else context.dead_mark
        start = mark.begin(now)
        if start is None:
            return 0
        prefix = keys.space_prefix(keys.Space.DONE if status is JobStatus.DONE else keys.Space.DEAD)
        try:
            if shortest is None:
                return (await self._sweep(db, prefix, None, None, now, status))[0]
            # Done keys are time-first: nothing at or after the horizon can have expired.
            first = prefix + start.to_bytes(8, "big")
            end = prefix + min(max(now - shortest, start), _KEY_TIME_END).to_bytes(8, "big")
            count = (await self._sweep(db, prefix, first, end, now, status))[0]
            later = await db.scan(prefix, start=end, limit=1)
            if later:
                completed_at = keys.key_time(later[0][0])
                mark.note(completed_at, completed_at + shortest)
            return count
        except BaseException:
            mark.abort(start)
            raise

    async def _sweep(
        self,
        db: Database,
        prefix: bytes,
        first: bytes | None,
        end: bytes | None,
        now: int,
        status: JobStatus,
    ) -> tuple[int, int | None]:
        """Delete the expired records in ``[first, end)`` under ``prefix``, a page per transaction.

        Every record kept is noted in the space's mark. Returns how many were deleted, and
        when the earliest record kept expires (ms).
        """
        context = self._context
        mark = context.done_mark if status is JobStatus.DONE else context.dead_mark
        swept = 0
        next_due: int | None = None
        start, inclusive = first, True
        while True:
            rows = await db.scan(
                prefix, start=start, start_inclusive=inclusive, end=end, limit=SCAN_PAGE
            )
            expired: list[tuple[bytes, JobRecord]] = []
            undecodable: list[tuple[bytes, bytes, DataError]] = []
            for key, value in rows:
                at = keys.key_time(key) if status is JobStatus.DONE else 0
                try:
                    job = decode_job(value)
                except DataError as exc:
                    undecodable.append((key, value, exc))
                    continue
                config = context.config(job.queue_name)
                if status is JobStatus.DONE:
                    retention, since = retention_ms(config.keep_done), job.completed_at
                else:
                    retention, since = retention_ms(config.dead_retention), job.failed_at
                if retention is None or since is None:
                    mark.note(at, None)
                    continue
                expiry = since + retention
                if expiry >= now:
                    mark.note(at, expiry)
                    if next_due is None or expiry < next_due:
                        next_due = expiry
                    continue
                expired.append((key, job))
            if expired:
                swept += await self._delete_records(db, expired, status)
            if undecodable:
                await context.quarantine_rows(db, undecodable)
            if len(rows) < SCAN_PAGE:
                return swept, next_due
            start, inclusive = rows[-1][0], False

    async def _delete_records(
        self, db: Database, records: Sequence[tuple[bytes, JobRecord]], status: JobStatus
    ) -> int:
        """Delete expired records (and their index entries) in one transaction; return how many.

        A record already gone (requeued, or deleted by another sweep) is skipped.
        """
        context = self._context
        deleted: list[str] = []
        removed: list[JobRecord] = []  # jobs whose last record went

        async def body(txn: Transaction) -> None:
            deleted.clear()
            removed.clear()
            deltas = Deltas()
            for key, job in records:
                raw = await txn.get(key)
                if raw is None:
                    continue
                found = await locate(txn, job.id)
                await txn.delete(key)
                try:
                    stored = decode_job(raw)
                except DataError:
                    stored = job
                if found is not None and found[0] == key:
                    await txn.delete(keys.index_key(job.id))
                    # The job's last record: its history goes with it (the count is the
                    # stored record's, which the scan's copy may predate).
                    await transitions.delete_history(txn, stored)
                if found is None or found[0] == key:
                    removed.append(stored)
                if status is JobStatus.DEAD:
                    deltas.add(job.queue_name, "dead", -1)
                deleted.append(job.queue_name)
            await deltas.stage(txn, context.delta_seqs)

        await run_transaction(db, body, durable=False)
        if status is JobStatus.DEAD:
            context.count_queues(deleted)
        if any(job.payload_ref is not None for job in removed):
            # The removal must be durable before the objects go: a crash may orphan an
            # object, never leave a record without one.
            await db.flush()
            await context.payloads.delete_jobs(removed)
        return len(deleted)

    # ------------------------------------------------------------------ purge

    async def purge(self, queue_name: str, status: JobStatus) -> int:
        """`Queue.purge`."""
        keys.validate_queue_name(queue_name)
        if status not in (JobStatus.DEAD, JobStatus.DONE):
            raise InvalidArgument(
                "status", status, "must be JobStatus.DEAD or JobStatus.DONE (a terminal status)"
            )
        status = JobStatus(status)
        db = self._context.database
        if status is JobStatus.DEAD:
            prefix = keys.dead_prefix(queue_name)
        else:
            prefix = keys.space_prefix(keys.Space.DONE)  # time-first across queues
        purged = 0
        start: bytes | None = None
        inclusive = True
        while True:
            rows = await db.scan(prefix, start=start, start_inclusive=inclusive, limit=SCAN_PAGE)
            doomed: list[tuple[bytes, JobRecord]] = []
            undecodable: list[tuple[bytes, bytes, DataError]] = []
            for key, value in rows:
                if status is JobStatus.DONE and _key_queue(key) != queue_name:
                    continue
                try:
                    doomed.append((key, decode_job(value)))
                except DataError as exc:
                    undecodable.append((key, value, exc))
            if doomed:  # one transaction per page: a big purge is many small writes
                purged += await self._delete_records(db, doomed, status)
            if undecodable:
                await self._context.quarantine_rows(db, undecodable)
            if len(rows) < SCAN_PAGE:
                break
            start, inclusive = rows[-1][0], False
        await db.flush()
        return purged

    # ------------------------------------------------------------------ stats fold

    async def fold_stats_now(self) -> None:
        """`Queue.fold_stats_now`."""
        context = self._context
        db = context.database
        seqs = context.delta_seqs
        queues = seqs.take_touched()
        if not self._discovered:
            # The first fold also finds the deltas that earlier processes left behind.
            queues |= await queues_in(db, keys.Space.STATS_DELTA)
        for queue in sorted(queues):
            context.unfolded.pop(queue, None)
            try:
                await self._fold_queue(db, queue)
            except BaseException:
                seqs.touch(queue)
                raise
        self._discovered = True

    async def _fold_queue(self, db: Database, queue: str) -> None:
        """Fold ``queue``'s deltas into its stats record, from its floor (`DeltaSeqs`) on."""
        context = self._context
        seqs = context.delta_seqs
        base_key = keys.stats_key(queue)
        prefix = keys.stats_delta_prefix(queue)

        bad: list[quarantine.Moved] = []
        last: list[bytes] = []

        async def body(txn: Transaction) -> int:
            bad.clear()
            last.clear()
            floor = seqs.floor(queue)
            start = None if floor is None else keys.stats_delta_key(queue, floor)
            totals = decode_counts(await txn.get(base_key))
            rows = await txn.scan(prefix, start=start, limit=FOLD_ROWS)
            if not rows:
                return 0
            last.append(rows[-1][0])
            now = context.clock.now_ms()
            for n, (key, value) in enumerate(rows, 1):
                try:
                    delta = decode_delta(value)
                except DataError as exc:  # set aside; the other deltas still fold
                    bad.append(await quarantine.stage(txn, key, value, exc, now))
                    continue
                for i, amount in enumerate(delta):
                    totals[i] += amount
                await txn.delete(key)
                if n % FOLD_YIELD_EVERY == 0:  # background work: let the queue's work in
                    await trio.lowlevel.checkpoint()
            await txn.put(base_key, encode_map(dict(zip(STATS_FIELDS, totals, strict=True))))
            return len(rows)

        while True:
            bound = seqs.bound(queue)  # taken before the transaction begins (`DeltaSeqs`)
            folded = await run_transaction(db, body, durable=False)
            context.quarantined(bad)
            if folded < FOLD_ROWS:  # it saw every delta committed before the bound
                seqs.folded(queue, bound)
                return
            # A full batch: the keys after the last one it folded are still to come.
            seq = keys.stats_delta_seq(queue, last[0])
            if seq is not None:
                seqs.folded(queue, min(bound, seq + 1))

    # ------------------------------------------------------------------ payload collection

    async def collect_payloads_now(self, grace: float) -> PayloadCollection:
        """`Queue.collect_payloads_now`, with a checked ``grace`` in seconds."""
        context = self._context
        db = context.database
        async with self._collect_lock:
            return await collect(
                context.store,
                db,
                context.payloads,
                now_ms=context.clock.now_ms(),
                grace_ms=duration_ms(grace),
            )

    # ------------------------------------------------------------------ background loops

    async def every(
        self, interval: float, work: Callable[[], Awaitable[object]], what: str
    ) -> None:
        """Run ``work`` every ``interval`` seconds until the queue stops.

        Only `Fenced` and `StorageFatal` (which stop the queue) and `QueueClosed` end it; any
        other error (a transient outage, a bad value) is logged and retried after a backoff.
        """
        context = self._context
        streak = context.health.streak(what)
        try:
            delay = interval
            while context.failure is None:
                await trio.sleep(delay)
                delay = interval
                try:
                    await work()
                except (Fenced, StorageFatal) as exc:
                    context.fail(exc)
                    return
                except QueueClosed:
                    return
                except Exception as exc:  # one bad tick must not end the queue
                    delay = max(interval, streak.failed(exc))
                else:
                    streak.succeeded()
        finally:
            context.health.release(streak)

    async def folder(self, interval: float, fold: Callable[[], Awaitable[None]]) -> None:
        """Run ``fold`` when enough deltas accumulated, at least every ``interval`` (>= 1 s)."""
        context = self._context
        streak = context.health.streak("stats fold")
        try:
            backoff = 0.0
            while context.failure is None:
                if backoff:
                    await trio.sleep(backoff)
                with trio.move_on_after(max(interval, 1.0)):
                    await context.fold_wanted.wait()
                context.fold_wanted = trio.Event()
                backoff = 0.0
                try:
                    await fold()
                except (Fenced, StorageFatal) as exc:
                    context.fail(exc)
                    return
                except QueueClosed:
                    return
                except Exception as exc:  # one bad fold must not end the queue
                    backoff = streak.failed(exc)
                else:
                    streak.succeeded()
        finally:
            context.health.release(streak)


protect(Maintenance)
