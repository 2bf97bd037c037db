"""Claims: pending to claimed, waiting for claimable jobs, and the in-memory leases.

Theory of operation.

- A claim moves up to ``max_jobs`` pending records, in claim order (priority, then id), to
  their claimed keys in one transaction: ``attempts + 1``, ``claimed_at``, and the job's
  dedup entry released (a new job may take the key while this one runs). The commit is not
  awaited for durability: a claim lost in a crash leaves the job pending.
- Claims of one queue run one at a time (`QueueState.lock`) from the queue's
  `ClaimCursor`, which remembers where the last claim stopped and whether the space ran dry;
  every insert of a pending key moves the cursor back (`Inserts.finish`), so no job is left
  behind it.
- Only durable jobs are claimed: pending keys still held by a durable write
  (`QueueState.unflushed`) are skipped; their write announces them when its wait ends.
- The lease is process state (`LeaseRegistry`), never written: a fresh token per claim,
  registered *before* the commit so a concurrent cancel reaches it. The token fences every
  later use of the claim: a settlement (`_settle.py`) needs the lease and the claimed
  record; the reaper (`_maintenance.py`) takes the lease away when it expires.
- An undecodable pending record is quarantined in the same transaction and the claim goes
  on past it.
- Offloaded payloads (`_payloads.py`) are read after the transaction, outside the claim
  lock; a claim whose object is missing is dead-lettered instead of delivered.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from ._adapter import run_transaction
from ._context import Deltas
from ._errors import ClaimLost, DataError, InvalidState, PayloadMissing, StorageError, TaqubaError
from ._interrupts import protect
from ._lease import CancelToken, LeaseEntry, LeaseRegistry
from ._records import JobStatus, decode_job, encode_job
from ._types import Claim
from ._validate import check_int, check_seconds, clamp_time, duration_ms

if TYPE_CHECKING:
    from . import _quarantine as quarantine  # pyright: ignore[reportPrivateUsage]
    from ._adapter import Transaction
    from ._context import QueueContext, QueueState
    from ._cursor import Bound
    from ._settle import Settlement

__all__ = ["Claims"]

log = logging.getLogger("taquba")

MAX_CLAIM = 2**31 - 1
"""The most jobs one `claim_batch` may ask for."""


class Claims:
    """`Queue.claim_batch`, `Queue.wait_for_jobs_on` and the lease operations of one queue."""

    def __init__(self, context: QueueContext, owner: object) -> None:
        self._context = context
        self._owner = owner  # the `Queue` the claims belong to (settled through it)
        self.settlement: Settlement | None = None  # set by `Queue`: ends undeliverable claims

    def check_claim(self, claim: object, operation: str) -> Claim:
        """``claim``, if it is a `Claim` of this queue (else `InvalidState` or `ClaimLost`)."""
        if not isinstance(claim, Claim):
            raise InvalidState(
                f"{operation} takes a Claim returned by claim(); got {type(claim).__name__}"
            )
        if claim._owner is not self._owner:  # pyright: ignore[reportPrivateUsage]
            raise ClaimLost(claim.id, "the claim belongs to another queue handle")
        return claim

    def _lease_ms(self, queue: str, lease: float | None) -> int:
        if lease is None:
            return duration_ms(self._context.config(queue).lease_duration)
        return duration_ms(check_seconds("lease", lease, positive=True))

    async def claim_batch(self, queue: str, max_jobs: int, lease: float | None) -> list[Claim]:
        """`Queue.claim_batch`."""
        while True:
            claims, quarantined_only = await self._claim_batch_once(queue, max_jobs, lease)
            if any(claim.job.payload_ref is not None for claim in claims):
                delivered = await self._materialize(claims)
                if claims and not delivered:
                    continue  # every job claimed was set aside: look for others
                claims = delivered
            if claims and self._context.observers.active:
                jobs = [claim.job for claim in claims]
                self._context.observers.emit("claimed", lambda o, j=jobs: o.claimed(queue, j))
            if not quarantined_only:
                return claims

    async def _materialize(self, claims: list[Claim]) -> list[Claim]:
        """The claims with their offloaded payloads read (after the claim lock is released).

        A claim whose object is missing is dead-lettered at once and not delivered (a worker
        could do nothing with it); one whose object cannot be read now is nacked (retried
        after the queue's backoff, like a failed attempt). If no claim is left to deliver, the
        read error is raised (a worker pauses, as for a failed claim).
        """
        payloads = self._context.payloads
        delivered: list[Claim] = []
        failure: TaqubaError | None = None
        for claim in claims:
            try:
                job = await payloads.materialize(claim.job)
            except PayloadMissing as exc:
                log.error("dead-lettering job %r: %s", claim.id, exc)
                await self._set_aside(claim, str(exc), dead=True)
                continue
            except StorageError as exc:
                failure = failure or exc
                await self._set_aside(claim, f"could not read the payload: {exc}", dead=False)
                continue
            cancel = claim._cancel  # pyright: ignore[reportPrivateUsage]
            delivered.append(Claim(job, claim.token, claim.owner, cancel))
        if failure is not None and not delivered:
            raise failure
        return delivered

    async def _set_aside(self, claim: Claim, reason: str, *, dead: bool) -> None:
        """End a claim that cannot be delivered (dead-letter or nack; the lease if that fails)."""
        settlement = self.settlement
        assert settlement is not None, "Queue connects its settlement"
        try:
            if dead:
                await settlement.dead_letter(claim, reason, None)
            else:
                await settlement.nack(claim, reason, None, None, None)
        except TaqubaError as exc:  # the lease expires and the reaper takes the job back
            log.warning("could not settle undeliverable job %r: %s", claim.id, exc)

    async def _claim_batch_once(
        self, queue: str, max_jobs: int, lease: float | None
    ) -> tuple[list[Claim], bool]:
        """One claim transaction; also whether it only quarantined records, with more to scan."""
        context = self._context
        keys.validate_queue_name(queue)
        lease_ms = self._lease_ms(queue, lease)
        max_jobs = check_int("max_jobs", max_jobs, low=0, high=MAX_CLAIM)
        db = context.database
        state = context.state(queue)
        if max_jobs == 0 or state.cursor.known_empty:
            await trio.lowlevel.checkpoint()
            return [], False
        async with state.lock:
            if state.cursor.known_empty:
                return [], False
            ticket = state.cursor.begin_claim()
            prefix = keys.pending_prefix(queue)
            claims: list[Claim] = []
            taken: list[bytes] = []
            bad: list[quarantine.Moved] = []
            last: list[bytes | None] = [None]  # the last pending key consumed (or quarantined)
            more = False  # the scan saw a pending key beyond the batch

            async def body(txn: Transaction) -> None:
                nonlocal more
                claims.clear()
                taken.clear()
                bad.clear()
                last[0] = None
                now = context.clock.now_ms()
                bound = ticket.bound
                rows = await self._scan_claimable(txn, state, prefix, bound, max_jobs + 1)
                more = len(rows) > max_jobs
                rows = rows[:max_jobs]
                if not rows:
                    return
                deltas = Deltas()
                expires = clamp_time(now + lease_ms)
                for key, value in rows:
                    try:
                        job = decode_job(value)
                    except DataError as exc:  # one bad record must not block the queue
                        bad.append(await context.stage_quarantine(txn, key, value, exc, deltas))
                        last[0] = key
                        continue
                    claimed = job.replace(
                        status=JobStatus.CLAIMED,
                        attempts=job.attempts + 1,
                        claimed_at=now,
                        dedup_key=None,
                    )
                    if job.dedup_key is not None:
                        dedup = keys.dedup_key(queue, job.dedup_key)
                        if await txn.get(dedup) == job.id.encode("ascii"):
                            await txn.delete(dedup)
                    ckey = keys.claimed_key(queue, job.id)
                    await txn.delete(key)
                    await txn.put(ckey, encode_job(claimed))
                    token = LeaseRegistry.new_token()
                    cancel = CancelToken(cancelled=job.cancel_requested)
                    # Registered before the commit, so a concurrent cancel can reach it.
                    context.leases.insert(queue, job.id, LeaseEntry(token, expires, cancel))
                    claims.append(Claim(claimed, token, self._owner, cancel))
                    taken.append(key)
                    last[0] = key
                deltas.move(queue, "pending", "claimed", len(taken))
                await deltas.stage(txn, context.delta_seqs)

            try:
                await run_transaction(db, body, durable=False)
            except BaseException:
                state.cursor.abort_claim(ticket)
                raise
            state.cursor.finish_claim(ticket, last[0], ran_dry=not more)
            context.quarantined(bad)
        if claims or bad:
            context.count_deltas(queue)
            if more:
                # More jobs are waiting: pass one wakeup on, so a backlog keeps waking idle
                # workers (an insert made before anyone waited left a single permit).
                state.wakeup.notify_one()
        return claims, not claims and bool(bad) and more

    async def _scan_claimable(
        self,
        txn: Transaction,
        state: QueueState,
        prefix: bytes,
        bound: Bound | None,
        want: int,
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``want`` pending rows from ``bound`` on, skipping keys not yet durable.

        A skipped (held) key may end up behind the cursor's bound; its write announces it
        when its durability wait ends (`Inserts.finish`), which moves the bound back and
        bumps the insert epoch, so neither the bound nor a "ran dry" verdict can hide it.
        """
        held = state.unflushed
        start = bound.key if bound else None
        inclusive = bound.inclusive if bound else True
        rows: list[tuple[bytes, bytes]] = []
        while True:
            need = want - len(rows)
            limit = need + min(len(held), need)  # room for a few held keys in one scan
            page = await txn.scan(
                prefix, start=start, start_inclusive=inclusive, limit=limit, cache_blocks=True
            )
            rows.extend(row for row in page if row[0] not in held)
            if len(rows) >= want or len(page) < limit:
                return rows[:want]
            start, inclusive = page[-1][0], False

    async def wait_for_jobs_on(self, queue: str) -> None:
        """`Queue.wait_for_jobs_on` (the facade keeps its interrupt handling)."""
        context = self._context
        keys.validate_queue_name(queue)
        context.database  # noqa: B018 - raises if the queue is closed or failed
        state = context.state(queue)
        async with trio.open_nursery() as nursery:

            async def stop_on_failure() -> None:
                await context.stopped.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_failure)
            await state.wakeup.wait()
            nursery.cancel_scope.cancel()
        context.database  # noqa: B018 - raise the failure that ended the wait, if any

    def renew_lease(self, claim: Claim, extension: float) -> int:
        """`Queue.renew_lease`."""
        context = self._context
        claim = self.check_claim(claim, "renew_lease")
        seconds = check_seconds("extension", extension, positive=True)
        expires = clamp_time(context.clock.now_ms() + duration_ms(seconds))
        if context.db is None or not context.leases.extend(
            claim.queue_name,
            claim.id,
            claim._token,  # pyright: ignore[reportPrivateUsage]
            expires,
        ):
            raise ClaimLost(claim.id)
        return expires

    def lease_expiry(self, claim: Claim) -> int | None:
        """`Queue.lease_expiry`."""
        entry = self._context.leases.get(claim.queue_name, claim.id, claim._token)  # pyright: ignore[reportPrivateUsage]
        return entry.expires_at if entry else None


protect(Claims)
