"""Settlements (ack, nack, dead-letter), requeue of dead jobs, cancel, waiting for completion.

Theory of operation: the settlement fence.

- A settlement first marks the claim's in-memory lease as settling (`LeaseRegistry.
  begin_settling`): a claim whose lease is gone, is being reaped, or is already being settled
  gets `ClaimLost` before anything is staged. The mark is dropped when the settlement fails
  (the lease itself is removed once a settlement is durable), so exactly one settlement of a
  claim can be under way, and none after one succeeded.
- In its transaction the settlement checks the lease again (the reaper may have taken it
  while the settlement waited for its batch) and deletes the claimed record. A nack or a
  dead-letter reads that record first (they rewrite it); an ack does not read it unless it
  keeps done records or an earlier settlement of the claim ended with an unknown outcome
  (`LeaseEntry.verify`): the mark already excludes a second settlement, and a racing reaper
  or cancel writes the same key, so one of the two transactions conflicts and, on retry, the
  settlement sees the lease gone (`ClaimLost`) or the reaper and cancel see the record gone.
  Nothing of a losing settlement is written (its effects neither).
- Settlements commit durably, then remove the lease. Acks are group-committed: while one
  batch waits for its WAL flush the next accumulates; each ack keeps its own outcome.
- Where the job goes: ack to done (kept, with the index rewritten) or deleted (index too);
  nack to pending, scheduled (backoff) or dead (`_transitions.retry`, `dead_letter`);
  dead_letter to dead; requeue_dead_job from dead to pending (`_transitions.revive`);
  wake_scheduled from scheduled to pending (`_transitions.wake`). Each end of an attempt, and
  a requeue, appends to the job's attempt history; removing a job's last record (ack without
  retention, cancel) deletes its history in the same transaction, and its offloaded payload
  object after the commit (`_payloads.py`); a dead-letter keeps the object for a requeue.
  Follow-up enqueues offload their payloads before the settlement begins; the objects of
  those not created (a dedup hit, a nack that retried, a failed settlement) are deleted.
- Pending keys a settlement inserts (a retry, follow-up enqueues of `Effects`, a requeue)
  are held from claims until the commit is durable, and announced whatever the outcome;
  due times it writes hold the promotion mark, a kept done record the done mark, until its
  commit attempt is over.
- After the commit: a job that ended (done, dead, cancelled) wakes only its own
  `wait_for_completion` calls; a dead-letter lowers the dead sweep's due time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import trio

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _transitions as transitions
from ._adapter import Transaction, run_transaction
from ._batch import BatchRequest, DropFromBatch, GroupCommit
from ._config import backoff_delay
from ._context import CompletionWaiter, Deltas, Inserts, Prepared, QueueContext
from ._enqueue import MAX_BATCH, prepare, stage_enqueue
from ._errors import (
    ClaimLost,
    InvalidState,
    JobNotFound,
    PayloadMissing,
    StorageError,
    TaqubaError,
    UsageError,
)
from ._ids import validate_job_id
from ._interrupts import protect
from ._kv import check_expectations, check_kv_expect, check_kv_key, check_kv_writes
from ._lease import LeaseEntry, LeaseRegistry
from ._payloads import SETTLED
from ._records import AttemptOutcome, JobRecord, JobStatus, decode_job, encode_attempt, encode_job
from ._types import CancelOutcome, Claim, Effects, EnqueueResult, NackResult, WakeOutcome
from ._validate import check_optional_seconds, duration_ms
from ._views import locate

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from ._claims import Claims

__all__ = ["Settlement"]

T = TypeVar("T")


@dataclass(slots=True)
class _Planned:
    """A settlement's checked `Effects`: follow-ups prepared, KV writes, deletes, expectations."""

    prepared: list[Prepared] = field(default_factory=list[Prepared])
    writes: dict[bytes, bytes] = field(default_factory=dict[bytes, bytes])
    deletes: list[bytes] = field(default_factory=list[bytes])
    expect: dict[bytes, bytes | None] = field(default_factory=dict[bytes, bytes | None])


@dataclass(slots=True, eq=False)
class _AckRequest(BatchRequest):
    """One `Queue.ack_with` call waiting to be committed in a batch."""

    claim: Claim
    effects: _Planned
    completed_at: int
    keep_done: bool
    inserts: Inserts  # follow-up enqueues: hidden from claims until durable
    results: list[EnqueueResult] = field(default_factory=list[EnqueueResult])


class Settlement:
    """Ends of a claim and of a job: `Queue.ack_with`, `nack`, `dead_letter`, and the rest."""

    def __init__(self, context: QueueContext, claims: Claims) -> None:
        self._context = context
        self._claims = claims
        self._acks = GroupCommit(
            lambda: context.database, self._stage_acks, self._acks_committed, max_batch=MAX_BATCH
        )

    # ------------------------------------------------------------------ shared steps

    def _begin_settling(self, claim: Claim) -> LeaseEntry:
        """Mark the claim as being settled, or raise `ClaimLost` (the module docstring)."""
        self._context.database  # noqa: B018 - raises if the queue is closed or failed
        token = claim._token  # pyright: ignore[reportPrivateUsage]
        entry = self._context.leases.begin_settling(claim.queue_name, claim.id, token)
        if entry is None:
            raise ClaimLost(claim.id)
        return entry

    @staticmethod
    def _end_settling(entry: LeaseEntry, error: BaseException) -> None:
        """The settlement raised ``error``: a rejection wrote nothing; anything else may have."""
        known = isinstance(error, TaqubaError) and not isinstance(error, StorageError)
        LeaseRegistry.end_settling(entry, outcome_known=known)

    async def _take_claim(self, txn: Transaction, claim: Claim) -> JobRecord:
        """The settlement fence: the claim must still hold its lease and its record."""
        token = claim._token  # pyright: ignore[reportPrivateUsage]
        if self._context.leases.get(claim.queue_name, claim.id, token) is None:
            raise ClaimLost(claim.id)
        key = keys.claimed_key(claim.queue_name, claim.id)
        raw = await txn.get(key)
        if raw is None:
            raise ClaimLost(claim.id, "the claimed record no longer exists")
        await txn.delete(key)
        return decode_job(raw)

    def _prepare_effects(self, effects: Effects | None) -> _Planned:
        if effects is None:
            return _Planned()
        if not isinstance(effects, Effects):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("effects must be an Effects instance")
        now = self._context.clock.now_ms()
        return _Planned(
            prepared=[prepare(self._context, request, now) for request in effects.enqueues],
            writes=check_kv_writes(effects.kv_writes),
            deletes=[check_kv_key(key) for key in effects.kv_deletes],
            expect=check_kv_expect(effects.kv_expect),
        )

    async def _stage_effects(
        self, txn: Transaction, effects: _Planned, deltas: Deltas, inserts: Inserts
    ) -> list[EnqueueResult]:
        """Stage ``effects`` in the settlement's transaction.

        Raises `KvConflict` if an expectation fails: the transaction is dropped, and the
        claim can be settled again.
        """
        await check_expectations(txn, effects.expect)
        results = [await stage_enqueue(txn, item, deltas, inserts) for item in effects.prepared]
        for key, value in effects.writes.items():
            await txn.put(keys.user_key(key), value)
        for key in effects.deletes:
            await txn.delete(keys.user_key(key))
        return results

    async def _with_effects(
        self,
        prepared: Sequence[Prepared],
        run: Callable[[], Awaitable[T]],
        results: Callable[[T], Sequence[EnqueueResult]],
    ) -> T:
        """Offload the follow-up payloads, ``run`` the settlement, drop the objects left unused.

        Objects of follow-ups that were not created (a dedup hit, effects a nack did not
        apply, a failed settlement) are deleted (`_payloads.py`).
        """
        context = self._context
        await context.offload(prepared)
        try:
            result = await run()
        except BaseException as exc:
            await context.settle_enqueues(prepared, None, exc)
            raise
        await context.settle_enqueues(prepared, results(result), None)
        return result

    async def _settle(
        self,
        claim: Claim,
        stage: Callable[[Transaction, JobRecord, Deltas, Inserts], Awaitable[T]],
    ) -> T:
        """Run a settlement: fence, stage, durable commit, then release the lease.

        Pending keys the settlement inserts (a retry, follow-up enqueues) are held from
        claims until the commit is durable, and announced to the cursor whatever the outcome.
        """
        context = self._context
        entry = self._begin_settling(claim)
        inserts = context.inserts(hold=True)

        async def body(txn: Transaction) -> T:
            stored = await self._take_claim(txn, claim)
            deltas = Deltas()
            result = await stage(txn, stored, deltas, inserts)
            await deltas.stage(txn, context.delta_seqs)
            return result

        try:
            result = await run_transaction(context.database, body, durable=True)
        except BaseException as exc:
            self._end_settling(entry, exc)
            raise
        finally:
            inserts.finish()
        context.leases.remove(claim.queue_name, claim.id, claim._token)  # pyright: ignore[reportPrivateUsage]
        context.count_deltas(claim.queue_name)
        return result

    # ------------------------------------------------------------------ ack

    async def ack_with(self, claim: Claim, effects: Effects | None) -> list[EnqueueResult]:
        """`Queue.ack_with`."""
        context = self._context
        claim = self._claims.check_claim(claim, "ack")
        planned = self._prepare_effects(effects)
        prepared = planned.prepared
        await context.offload(prepared)
        try:
            entry = self._begin_settling(claim)
        except BaseException as exc:
            await context.settle_enqueues(prepared, None, exc)
            raise
        request = _AckRequest(
            claim=claim,
            effects=planned,
            completed_at=context.clock.now_ms(),
            keep_done=context.config(claim.queue_name).keep_done is not None,
            inserts=context.inserts(hold=True),
        )
        holds = context.hold_scheduled(prepared)
        done_holds = (
            [context.hold_done(claim.queue_name, request.completed_at)] if request.keep_done else []
        )
        error: BaseException | None = None
        try:
            await self._acks.submit(request)
        except BaseException as exc:
            error = exc
            self._end_settling(entry, exc)
            raise
        finally:
            context.release(context.promote_mark, holds)
            context.release(context.done_mark, done_holds)
            request.inserts.finish()  # follow-ups claimable now: durable, or unknown
            await context.settle_enqueues(prepared, request.results, error)
        if not request.keep_done:
            # The job's last record is gone: its payload object goes too. The claim's copy
            # of the record has the ref, which no transition changes.
            await context.payloads.delete_jobs((claim.job,))
        if context.observers.active:  # in the caller's task (its context), not the leader's
            context.observe_settled(claim, "acked", dead=False)
            context.observe_enqueued(prepared, request.results)
        return request.results

    async def _stage_acks(
        self, txn: Transaction, batch: list[_AckRequest]
    ) -> list[tuple[_AckRequest, TaqubaError]]:
        """Stage a batch of acks (rerun from scratch on conflict); return the lost claims."""
        lost: list[tuple[_AckRequest, TaqubaError]] = []
        deltas = Deltas()
        seen: set[int] = set()
        for request in batch:
            claim = request.claim
            token = claim._token  # pyright: ignore[reportPrivateUsage]
            entry = self._context.leases.get(claim.queue_name, claim.id, token)
            if token in seen or entry is None:  # reaped while it waited for its batch
                lost.append((request, ClaimLost(claim.id)))
                continue
            seen.add(token)
            try:
                request.results = await self._stage_ack(txn, request, deltas, entry.verify)
            except TaqubaError as exc:
                raise DropFromBatch(request, exc) from exc
        await deltas.stage(txn, self._context.delta_seqs)
        return lost

    def _acks_committed(self, committed: list[_AckRequest]) -> None:
        context = self._context
        for request in committed:
            claim = request.claim
            context.leases.remove(claim.queue_name, claim.id, claim._token)  # pyright: ignore[reportPrivateUsage]
        context.count_queues(
            [r.claim.queue_name for r in committed]
            + [item.record.queue_name for r in committed for item in r.effects.prepared]
        )
        context.notify_completion(r.claim.id for r in committed)

    async def _stage_ack(
        self, txn: Transaction, request: _AckRequest, deltas: Deltas, verify: bool
    ) -> list[EnqueueResult]:
        claim = request.claim
        key = keys.claimed_key(claim.queue_name, claim.id)
        # The settling mark makes this the claim's only settlement, and a racing reaper or
        # cancel writes `key` too (one of the two conflicts), so the record is read only when
        # it is needed (a kept done record is made from it) or an earlier settlement of this
        # claim ended with an unknown outcome and may have deleted it already.
        if request.keep_done or verify:
            raw = await txn.get(key)
            if raw is None:
                raise ClaimLost(claim.id, "the claimed record no longer exists")
        else:
            raw = None
        if raw is not None and request.keep_done:
            at = request.completed_at
            stored = decode_job(raw)
            attempt, size = transitions.ended(stored, AttemptOutcome.COMPLETED, at)
            done = stored.replace(status=JobStatus.DONE, completed_at=at, history_size=size)
            done_key = keys.done_key(at, claim.queue_name, claim.id)
            await txn.put(done_key, encode_job(done))
            await txn.put(keys.index_key(claim.id), done_key)
            await txn.put(keys.history_key(claim.id, size - 1), encode_attempt(attempt))
        else:
            await txn.delete(keys.index_key(claim.id))
            # The job's last record goes, and its history with it. The claim's copy of the
            # record has the history's size: only a transition of the claimed record appends,
            # and each of those (the reaper's) conflicts with this transaction.
            await transitions.delete_history(txn, decode_job(raw) if raw is not None else claim.job)
        await txn.delete(key)
        deltas.move(claim.queue_name, "claimed", "done")
        return await self._stage_effects(txn, request.effects, deltas, request.inserts)

    # ------------------------------------------------------------------ nack, dead-letter

    async def nack(
        self,
        claim: Claim,
        error: str,
        retry_after: float | None,
        kv_writes: Mapping[bytes, bytes] | None,
        effects_if_dead: Effects | None,
    ) -> NackResult:
        """`Queue.nack`."""
        context = self._context
        claim = self._claims.check_claim(claim, "nack")
        if not isinstance(error, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("error must be a str")
        retry_after = check_optional_seconds("retry_after", retry_after)
        writes = check_kv_writes(kv_writes or {})
        planned = self._prepare_effects(effects_if_dead)
        prepared = planned.prepared
        config = context.config(claim.queue_name)
        now = context.clock.now_ms()
        holds = context.hold_scheduled(prepared)  # held until the settlement is over

        async def stage(
            txn: Transaction, stored: JobRecord, deltas: Deltas, inserts: Inserts
        ) -> NackResult:
            for key, value in writes.items():
                await txn.put(keys.user_key(key), value)
            if stored.attempts >= stored.max_attempts:
                await transitions.apply(
                    txn, transitions.dead_letter(stored, error, now), deltas, inserts
                )
                results = await self._stage_effects(txn, planned, deltas, inserts)
                return NackResult(dead=True, enqueued=results)
            delay = backoff_delay(
                stored.attempts, config.retry_backoff_base, config.retry_backoff_max
            )
            if retry_after is not None:
                delay = max(delay, retry_after)
            delay_ms = duration_ms(delay)  # an uncapped backoff may be infinite
            move = transitions.retry(stored, error, now, delay_ms)
            run_at = move.record.run_at
            if run_at is not None:  # held before it is written (see _marks.py)
                holds.append(context.promote_mark.hold(run_at, run_at))
            await transitions.apply(txn, move, deltas, inserts)
            return NackResult(dead=False, enqueued=[])

        try:
            # A retry drops the effects: their objects go (as after a failure).
            result = await self._with_effects(
                prepared, lambda: self._settle(claim, stage), lambda r: r.enqueued
            )
        finally:
            context.release(context.promote_mark, holds)
        if result.dead:
            context.count_queues({item.record.queue_name for item in prepared} - {claim.queue_name})
            context.note_dead_letter(claim.queue_name)
            context.notify_completion((claim.id,))
        if context.observers.active:
            context.observe_settled(claim, "nacked", dead=result.dead)
            context.observe_enqueued(prepared, result.enqueued)
        return result

    async def dead_letter(
        self, claim: Claim, reason: str, effects: Effects | None
    ) -> list[EnqueueResult]:
        """`Queue.dead_letter`."""
        context = self._context
        claim = self._claims.check_claim(claim, "dead_letter")
        if not isinstance(reason, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("reason must be a str")
        planned = self._prepare_effects(effects)
        prepared = planned.prepared
        now = context.clock.now_ms()

        async def stage(
            txn: Transaction, stored: JobRecord, deltas: Deltas, inserts: Inserts
        ) -> list[EnqueueResult]:
            move = transitions.dead_letter(stored, reason, now)
            await transitions.apply(txn, move, deltas, inserts)
            return await self._stage_effects(txn, planned, deltas, inserts)

        holds = context.hold_scheduled(prepared)
        try:
            results = await self._with_effects(
                prepared, lambda: self._settle(claim, stage), lambda r: r
            )
        finally:
            context.release(context.promote_mark, holds)
        # The dead job keeps its payload object: `requeue_dead_job` revives it.
        context.count_queues({item.record.queue_name for item in prepared} - {claim.queue_name})
        context.note_dead_letter(claim.queue_name)
        context.notify_completion((claim.id,))
        if context.observers.active:
            context.observe_settled(claim, "dead_lettered", dead=True)
            context.observe_enqueued(prepared, results)
        return results

    # ------------------------------------------------------------------ requeue, cancel

    async def requeue_dead_job(self, job: JobRecord) -> None:
        """`Queue.requeue_dead_job`."""
        context = self._context
        if not isinstance(job, JobRecord):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidState("requeue_dead_job takes a JobRecord")
        if job.status is not JobStatus.DEAD:
            raise InvalidState(f"job {job.id!r} is {job.status.value}, not dead")
        dead = keys.dead_key(job.queue_name, job.id)
        inserts = context.inserts(hold=True)
        now = context.clock.now_ms()

        async def body(txn: Transaction) -> None:
            raw = await txn.get(dead)
            if raw is None:
                raise JobNotFound(job.id)
            stored = decode_job(raw)
            await txn.delete(dead)
            deltas = Deltas()
            await transitions.apply(txn, transitions.revive(stored, now), deltas, inserts)
            await deltas.stage(txn, context.delta_seqs)

        try:
            await run_transaction(context.database, body, durable=True)
        finally:
            inserts.finish()  # claimable now: durable, or of unknown outcome
        context.count_deltas(job.queue_name)

    async def cancel(self, job_id: str) -> CancelOutcome:
        """`Queue.cancel`."""
        context = self._context
        validate_job_id(job_id)
        index = keys.index_key(job_id)
        outcome: list[tuple[CancelOutcome, JobRecord | None]] = []

        async def body(txn: Transaction) -> None:
            outcome.clear()
            found = await locate(txn, job_id)
            if found is None:
                outcome.append((CancelOutcome.NOT_FOUND, None))
                return
            key, raw = found
            job = decode_job(raw)
            if job.status in (JobStatus.PENDING, JobStatus.SCHEDULED):
                await txn.delete(key)
                await txn.delete(index)
                await transitions.delete_history(txn, job)
                if job.dedup_key is not None:
                    dedup = keys.dedup_key(job.queue_name, job.dedup_key)
                    if await txn.get(dedup) == job.id.encode("ascii"):
                        await txn.delete(dedup)
                deltas = Deltas()
                deltas.add(job.queue_name, job.status.value, -1)
                await deltas.stage(txn, context.delta_seqs)
                outcome.append((CancelOutcome.REMOVED, job))
            elif job.status is JobStatus.CLAIMED:
                if not job.cancel_requested:
                    await txn.put(key, encode_job(job.replace(cancel_requested=True)))
                outcome.append((CancelOutcome.REQUESTED, job))
            else:
                outcome.append((CancelOutcome.NOT_FOUND, None))

        await run_transaction(context.database, body, durable=True)
        result, job = outcome[0]
        if job is not None:
            entry = context.leases.lookup(job.queue_name, job.id)
            if entry is not None:
                entry.cancel.fire()
            if result is CancelOutcome.REMOVED:
                context.count_deltas(job.queue_name)
                context.notify_completion((job.id,))
                await context.payloads.delete_jobs((job,))  # its last record is gone
        return result

    async def wake_scheduled(self, job_id: str, payload: bytes | None) -> WakeOutcome:
        """`Queue.wake_scheduled`."""
        context = self._context
        validate_job_id(job_id)
        if payload is not None:
            if not isinstance(payload, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise UsageError(f"payload must be bytes or None, not {type(payload).__name__}")
            payload = bytes(payload)
        now = context.clock.now_ms()
        inserts = context.inserts(hold=True)
        outcome: list[tuple[WakeOutcome, str | None]] = []

        async def body(txn: Transaction) -> None:
            outcome.clear()
            found = await locate(txn, job_id)
            if found is None:
                outcome.append((WakeOutcome.NOT_FOUND, None))
                return
            key, raw = found
            job = decode_job(raw)
            if job.status is not JobStatus.SCHEDULED:
                outcome.append((WakeOutcome.NOT_SCHEDULED, None))
                return
            # The scheduler's promotion and a cancel delete this key too: exactly one of them
            # commits, and a retried wake finds the job pending (not scheduled) or gone.
            await txn.delete(key)
            deltas = Deltas()
            await transitions.apply(txn, transitions.wake(job, now, payload), deltas, inserts)
            await deltas.stage(txn, context.delta_seqs)
            outcome.append((WakeOutcome.WOKEN, job.queue_name))

        try:
            await run_transaction(context.database, body, durable=True)
        finally:
            inserts.finish()  # claimable now: durable, or of unknown outcome
        result, queue = outcome[0]
        if queue is not None:
            context.count_deltas(queue)
        return result

    async def wait_for_completion(
        self, job_id: str, get_job: Callable[[str], Awaitable[JobRecord | None]]
    ) -> JobRecord | None:
        """`Queue.wait_for_completion`, reading the job with ``get_job`` (`Queue.get_job`).

        A read that raises `PayloadMissing` is of a live job (a settled one reads without its
        object): the wait goes on, since the job's claim will dead-letter it.
        """
        context = self._context
        validate_job_id(job_id)
        first = True
        while True:
            # Registered before the read, so a completion committed meanwhile is not missed.
            # Only this job's settlement wakes the wait: a thousand waiters cost one read each
            # per completion of their own job, not per completion in the queue.
            waiter = context.completion_waiters.get(job_id)
            if waiter is None:
                waiter = context.completion_waiters[job_id] = CompletionWaiter()
            waiter.count += 1
            try:
                try:
                    job = await get_job(job_id)
                except PayloadMissing:
                    pass  # live, its object missing: its claim sets it aside; wait for that
                else:
                    if job is None:
                        if first:
                            raise JobNotFound(job_id)
                        return None
                    if job.status in SETTLED:
                        return job
                first = False
                async with trio.open_nursery() as nursery:

                    async def stop_on_failure() -> None:
                        await context.stopped.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(stop_on_failure)
                    await waiter.event.wait()
                    nursery.cancel_scope.cancel()
            finally:
                waiter.count -= 1
                if waiter.count == 0 and context.completion_waiters.get(job_id) is waiter:
                    del context.completion_waiters[job_id]
            context.database  # noqa: B018 - raise the failure that ended the wait, if any


protect(Settlement)
