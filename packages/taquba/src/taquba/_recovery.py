"""Recovery: abandoned claims (at open, and by the reaper) and the claim cursors kept at close.

Theory of operation.

- Leases are process state, so a claim outlives its process only as a claimed record. At
  open (with maintenance), `recover_claims` ends every claimed record it finds; while the
  queue runs, the reaper (`_maintenance.py`) ends the claims whose lease expired. Both go
  through `end_claims`: each job goes back to its pending key, or to the dead-letter inbox
  when out of attempts (`_transitions.abandon`).
- The fence of an abandoned claim is re-checked inside every transaction attempt: the
  reaper's "this lease is still the expired one" callback, then the claimed record itself
  (gone: settled meanwhile, or a claim that never committed). A claim failing either is
  left alone; a racing settlement deletes the same record, so one of the two conflicts.
- These writes are not awaited for durability and do not hold their pending keys: the
  claims were made from durable pending jobs, so a crash before this write is durable
  leaves the jobs claimable anyway. One transaction per page keeps a storm of expired
  leases from rewinding the claim cursor once per job.
- Claim cursors are saved at a clean close (`persist_cursors`) and restored, then deleted
  durably, at the next open (`restore_cursors`): a stale record left after a later crash
  could hide jobs behind it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _transitions as transitions
from ._adapter import Database, Transaction, run_transaction
from ._context import Deltas, QueueContext, QueueState
from ._cursor import Bound, ClaimCursor
from ._errors import DataError
from ._interrupts import protect
from ._records import AttemptOutcome, JobRecord, JobStatus, decode_job, decode_map, encode_map
from ._views import SCAN_PAGE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from . import _quarantine as quarantine  # pyright: ignore[reportPrivateUsage]

__all__ = ["end_claims", "persist_cursors", "recover_claims", "restore_cursors"]

log = logging.getLogger("taquba")


def _always() -> bool:
    return True


async def end_claims(
    context: QueueContext,
    claims: Sequence[tuple[bytes, Callable[[], bool]]],
    *,
    reason: str,
    ended: AttemptOutcome,
) -> list[bool]:
    """Requeue or dead-letter abandoned claims in one transaction (non-durable, idempotent).

    Shared by open-time recovery and the reaper. Each job goes back to its pending key (no
    attempt is consumed: the next claim counts one), or to the dead-letter inbox with
    ``reason`` when it is out of attempts; its history records ``ended`` (or
    ``DEAD_LETTERED``). Each claim's fence (the reaper's lease check) is
    re-checked inside every transaction attempt; a claim that fails it, is already gone or
    cannot be decoded is left alone. Returns, per claim, whether its record moved. One
    transaction for a whole page keeps a storm of expired leases from rewinding the claim
    cursor once per job. A claimed record that cannot be decoded is quarantined.
    """
    now = context.clock.now_ms()
    outcome: list[tuple[int, str, bytes, JobStatus, JobRecord]] = []
    # Not held: the claims were made from durable pending jobs, so a crash before this
    # write is durable leaves the jobs claimable anyway.
    inserts = context.inserts(hold=False)
    bad: list[quarantine.Moved] = []

    async def body(txn: Transaction) -> None:
        outcome.clear()
        bad.clear()
        deltas = Deltas()
        for index, (claimed, still_abandoned) in enumerate(claims):
            if not still_abandoned():
                continue  # settled meanwhile
            raw = await txn.get(claimed)
            if raw is None:
                continue  # already settled, or the residue of a claim that never committed
            try:
                job = decode_job(raw)
            except DataError as exc:
                bad.append(await context.stage_quarantine(txn, claimed, raw, exc, deltas))
                continue
            await txn.delete(claimed)
            move = transitions.abandon(job, reason, now, ended)
            # The index keeps pointing at the pending key (see _views.locate).
            await transitions.apply(txn, move, deltas, inserts)
            outcome.append((index, job.queue_name, move.key, move.record.status, job))
        await deltas.stage(txn, context.delta_seqs)

    try:
        await run_transaction(context.database, body, durable=False)
    finally:
        inserts.finish()  # also when the outcome is unknown
    context.quarantined(bad)
    moved = [False] * len(claims)
    dead: list[str] = []
    observers = context.observers
    for index, queue, _, status, job in outcome:
        moved[index] = True
        is_dead = status is not JobStatus.PENDING
        if is_dead:
            dead.append(job.id)
            context.note_dead_letter(queue)
        if observers.active:
            observers.emit(
                "claim_abandoned",
                lambda o, q=queue, j=job, d=is_dead: o.claim_abandoned(q, j, dead=d, reason=reason),
            )
    for queue in {queue for _, queue, _, _, _ in outcome}:
        context.count_deltas(queue)
    context.notify_completion(dead)
    return moved


async def recover_claims(context: QueueContext) -> None:
    """Requeue (or dead-letter) every claim a previous process left behind."""
    db = context.database
    prefix = keys.space_prefix(keys.Space.CLAIMED)
    start: bytes | None = None
    while True:
        rows = await db.scan(prefix, start=start, start_inclusive=False, limit=SCAN_PAGE)
        claimed = [key for key, _ in rows]  # undecodable ones are quarantined on the way
        if claimed:
            await end_claims(
                context,
                [(key, _always) for key in claimed],
                reason="claim interrupted by process exit",
                ended=AttemptOutcome.INTERRUPTED,
            )
        if len(rows) < SCAN_PAGE:
            return
        start = rows[-1][0]


async def restore_cursors(context: QueueContext) -> None:
    """Restore the claim cursors saved at the last clean close, and delete them durably."""
    db = context.database
    rows = await db.scan(keys.space_prefix(keys.Space.CURSOR))
    if not rows:
        return

    async def body(txn: Transaction) -> None:
        for key, _ in rows:
            await txn.delete(key)

    for key, value in rows:
        try:
            queue = keys.parse_queue_key(key)
            data = decode_map(value)
            bound_key = data.get("bound_key")
            bound = (
                Bound(bytes(bound_key), bool(data.get("bound_inclusive")))
                if bound_key is not None
                else None
            )
            context.states[queue] = QueueState(
                cursor=ClaimCursor(bound, known_empty=bool(data.get("known_empty")))
            )
        except (DataError, ValueError, UnicodeDecodeError):
            log.warning("ignoring an unreadable claim-cursor record %r", key)
    # Delete durably before serving: a stale record after a later crash could hide jobs.
    await run_transaction(db, body, durable=True)


async def persist_cursors(context: QueueContext, db: Database) -> None:
    """Save the claim cursors at a clean close, for the next open to restore."""
    snapshots: list[tuple[str, Bound | None, bool]] = []
    for queue, state in context.states.items():
        # A write still in flight may yet insert its held keys, which claims skipped:
        # never save a cursor past them.
        for key in state.unflushed:
            state.cursor.note_insert(key)
        bound, known_empty = state.cursor.snapshot()
        if bound is not None or known_empty:
            snapshots.append((queue, bound, known_empty))
    if not snapshots:
        return

    async def body(txn: Transaction) -> None:
        for queue, bound, known_empty in snapshots:
            await txn.put(
                keys.cursor_key(queue),
                encode_map(
                    {
                        "bound_key": bound.key if bound else None,
                        "bound_inclusive": bound.inclusive if bound else False,
                        "known_empty": known_empty,
                    }
                ),
            )

    await run_transaction(db, body, durable=True)


protect(end_claims, recover_claims, restore_cursors, persist_cursors)
