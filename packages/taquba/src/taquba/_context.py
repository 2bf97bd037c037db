"""The in-memory state of an open queue database, shared by the modules that change it.

`Queue` (in `_queue.py`) is a facade; the work is done by one module per concern, and each
of them holds the one `QueueContext` of the queue it serves:

- `_enqueue.py`: new jobs (`enqueue`, `enqueue_batch`, follow-up enqueues of settlements);
- `_claims.py`: claims, waiting for jobs, leases;
- `_settle.py`: settlements (ack, nack, dead-letter), requeue of dead jobs, cancel, waiting
  for completion;
- `_transitions.py`: what a job's next record is (pure; the modules above apply it);
- `_maintenance.py`: the background work (reaper, promotion, retention sweeps, stats fold);
- `_recovery.py`: claims abandoned by a dead process or an expired lease, claim cursors
  saved at close and restored at open;
- `_kv.py`: the user KV namespace; `_views.py`: reads shared with `QueueReader`;
- `_payloads.py`: offloaded payload objects (written, materialized, deleted).

This module owns what they share: the database handle and the queue's failure, the per-queue
claim state (`QueueState`), the in-memory leases, the low-water marks of the background scans
(see `_marks.py`), the bookkeeping every write does after its commit (announcing pending keys
to the claim cursor, counting stats delta records, waking `wait_for_completion` calls), and the
write-side helpers `Inserts` (pending keys hidden from claims until durable), `Deltas` (one
transaction's counter changes), `DeltaSeqs` (the sequence numbers of delta records, and how far
the stats fold may skip) and the quarantine of undecodable records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ormsgpack
import trio

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _quarantine as quarantine  # pyright: ignore[reportPrivateUsage]
from ._adapter import Database, Transaction, run_transaction
from ._cursor import ClaimCursor
from ._errors import DataError, QueueClosed, TaqubaError
from ._health import HealthTracker
from ._ids import IdGenerator
from ._interrupts import protect
from ._lease import LeaseRegistry
from ._marks import Mark
from ._observe import Observer, Observers
from ._payloads import Payloads
from ._records import decode_job
from ._validate import retention_ms
from ._views import STATS_FIELDS, locate
from ._wakeup import Wakeup

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from ._clock import Clock
    from ._config import QueueConfig
    from ._errors import StorageError
    from ._records import JobRecord
    from ._store import Store
    from ._types import Claim, EnqueueResult

__all__ = [
    "CompletionWaiter",
    "DeltaSeqs",
    "Deltas",
    "Inserts",
    "Prepared",
    "QueueContext",
    "QueueState",
]

log = logging.getLogger("taquba")

MAX_INSERT_WAKEUPS = 64
"""The most workers one write wakes."""

FOLD_THRESHOLD = 1_000
"""Unfolded stats delta records of one queue that wake the stats fold early."""


@dataclass(slots=True, eq=False)
class CompletionWaiter:
    """The `wait_for_completion` calls of one job: one event, and how many calls share it."""

    event: trio.Event = field(default_factory=trio.Event)
    count: int = 0


@dataclass(slots=True)
class QueueState:
    """Per-queue in-memory state of an open database."""

    cursor: ClaimCursor = field(default_factory=ClaimCursor)
    lock: trio.Lock = field(default_factory=trio.Lock)
    wakeup: Wakeup = field(default_factory=Wakeup)
    unflushed: dict[bytes, int] = field(default_factory=dict[bytes, int])
    """Pending keys of durable writes whose durability wait has not ended (claims skip
    them), with how many writes hold each."""


@dataclass(slots=True)
class Prepared:
    """An enqueue request resolved to a record before its transaction."""

    record: JobRecord
    """The record to write: with an offloaded payload, its stored form (see `_payloads.py`)."""
    key: bytes
    explicit_id: bool
    payload: bytes | None = None
    """The payload, when ``record``'s went to an object (what observers are shown)."""

    @property
    def job(self) -> JobRecord:
        """The record with its payload (as claims and reads return it)."""
        if self.payload is None:
            return self.record
        return self.record.replace(payload=self.payload)


class Inserts:
    """The pending keys one write inserts, and when claims may see them.

    Every path that can insert a pending key (enqueue, follow-up enqueues of settlements,
    retries, requeues, recovery, promotion) records its keys here while it stages them:

    - A durable write (``hold=True``) *holds* its keys from staging until its durability wait
      ends: claims skip held keys, so a worker only sees a job whose insert is durable (a job
      it runs cannot vanish in a crash). Holding starts before the commit, so no claim can
      see the keys between the commit being applied and this task resuming.
    - A non-durable write (claims' background relatives: reaper requeues, open-time recovery,
      promotion) does not hold: the state it moves the job from was durable already, so a
      crash leaves the job claimable anyway.

    `finish` runs when the write ends *whatever its outcome* (durable, failed, or unknown):
    it releases the holds and tells the claim cursor about every recorded key, which wakes
    waiting workers. A write whose outcome is unknown may have inserted its keys, so they
    must never sit behind the cursor unannounced (they would stay pending, counted and
    never claimed, even across a reopen that restores the cursor); announcing a key that
    was not written costs one scan.
    """

    __slots__ = ("_hold", "_keys", "_notify", "_state")

    def __init__(
        self,
        state: Callable[[str], QueueState],
        notify: Callable[[str, Sequence[bytes]], None],
        *,
        hold: bool,
    ) -> None:
        self._state = state
        self._notify = notify
        self._hold = hold
        self._keys: list[tuple[str, bytes]] = []

    def add(self, queue: str, key: bytes) -> None:
        """Record that the write stages pending ``key`` of ``queue`` (hold it if durable)."""
        self._keys.append((queue, key))
        if self._hold:
            held = self._state(queue).unflushed
            held[key] = held.get(key, 0) + 1

    def finish(self) -> None:
        """Release the holds and announce every recorded key (idempotent)."""
        recorded, self._keys = self._keys, []
        by_queue: dict[str, dict[bytes, None]] = {}
        for queue, key in recorded:
            if self._hold:
                held = self._state(queue).unflushed
                count = held.get(key, 0) - 1
                if count > 0:
                    held[key] = count
                else:
                    held.pop(key, None)
            by_queue.setdefault(queue, {})[key] = None
        for queue, pending_keys in by_queue.items():
            self._notify(queue, list(pending_keys))


class Deltas:
    """Counter changes staged by one transaction, per queue."""

    __slots__ = ("_by_queue",)

    def __init__(self) -> None:
        self._by_queue: dict[str, list[int]] = {}

    def add(self, queue: str, field_name: str, amount: int = 1) -> None:
        row = self._by_queue.setdefault(queue, [0, 0, 0, 0, 0])
        row[STATS_FIELDS.index(field_name)] += amount

    def move(self, queue: str, source: str, target: str, amount: int = 1) -> None:
        self.add(queue, source, -amount)
        self.add(queue, target, amount)

    async def stage(self, txn: Transaction, seqs: DeltaSeqs) -> None:
        for queue, row in self._by_queue.items():
            if any(row):
                seq = seqs.allocate(txn, queue)
                await txn.put(keys.stats_delta_key(queue, seq), ormsgpack.packb(row))

    def queues(self) -> Iterable[str]:
        return self._by_queue.keys()


class DeltaSeqs:
    """Sequence numbers of stats delta records, and where the next fold of a queue may start.

    Folded deltas are deleted, but their tombstones stay in SlateDB's memtable until it is
    uploaded and compacted, and a scan from the start of a queue's delta range walks every one
    of them, synchronously on the event loop: under load, tens of thousands a fold, 10-30 ms of
    stall each time. So each fold remembers a *floor*: every delta of the queue below it has
    been folded. The next fold scans from there.

    The floor is safe because this process is the only writer and sequence numbers only grow:
    a delta whose number is below the floor was allocated before the fold's bound was taken,
    and its transaction was no longer in flight then (`allocate` registers it until its
    outcome is known: `Transaction.on_finish`), so it was committed before the fold's
    transaction began and the fold saw it, or it was never written. A transaction whose
    commit outcome is unknown stays registered for good, which holds that queue's floor below
    its delta: folds of that queue scan from there again (correct, just the old cost). Deltas
    written before this process opened the database are found by the first fold, which scans
    every queue's whole range.
    """

    __slots__ = ("_floors", "_ids", "_in_flight", "_touched")

    def __init__(self, ids: IdGenerator) -> None:
        self._ids = ids
        self._in_flight: dict[int, str] = {}  # seq -> queue, until the outcome is known
        self._floors: dict[str, int] = {}
        self._touched: set[str] = set()  # queues whose deltas may have changed since a fold

    def allocate(self, txn: Transaction, queue: str) -> int:
        """The sequence number of a delta of ``queue`` that ``txn`` writes."""
        seq = self._ids.next_int()
        in_flight = self._in_flight
        in_flight[seq] = queue

        def finished() -> None:
            # Touched when its outcome is known: a fold that ran while it was in flight had
            # nothing of it to see, and left the floor below it.
            in_flight.pop(seq, None)
            self._touched.add(queue)

        txn.on_finish(finished)
        return seq

    def floor(self, queue: str) -> int | None:
        """Every delta of ``queue`` below this has been folded (None: not known yet)."""
        return self._floors.get(queue)

    def bound(self, queue: str) -> int:
        """What the floor may become after a fold whose transaction begins after this call.

        The lowest delta of ``queue`` still in flight, or a fresh number if none is.
        """
        fresh = self._ids.next_int()
        return min((s for s, q in self._in_flight.items() if q == queue), default=fresh)

    def folded(self, queue: str, floor: int) -> None:
        """A fold of ``queue`` committed: every delta below ``floor`` is folded."""
        self._floors[queue] = max(floor, self._floors.get(queue, floor))

    def take_touched(self) -> set[str]:
        """The queues with a delta transaction finished since the last call (to fold)."""
        touched, self._touched = self._touched, set()
        # A transaction whose commit outcome is unknown stays in flight: fold its queue each
        # time, in case its write was applied after all.
        touched.update(self._in_flight.values())
        return touched

    def touch(self, queue: str) -> None:
        """Fold ``queue`` next time too (its fold failed)."""
        self._touched.add(queue)


class QueueContext:
    """What the modules of one open queue share (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        config: QueueConfig,
        queues: Mapping[str, QueueConfig],
        clock: Clock,
        flush_interval: float | None,
        commit_deadline: float | None,
        observers: Iterable[Observer] = (),
        flush_linger: float | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.default_config = config
        self.configs = dict(queues)
        self.clock = clock
        self.flush_interval = flush_interval
        self.flush_linger = flush_linger
        self.commit_deadline = commit_deadline
        self.ids = IdGenerator(clock)
        self.delta_seqs = DeltaSeqs(self.ids)
        self.leases = LeaseRegistry()
        self.states: dict[str, QueueState] = {}
        self.completion_waiters: dict[str, CompletionWaiter] = {}
        # Low-water marks of the time-ordered background scans (see _marks.py).
        self.promote_mark = Mark()
        self.done_mark = Mark()
        self.dead_mark = Mark()
        self.stopped = trio.Event()
        self.failure: TaqubaError | None = None
        self.db: Database | None = None
        self.fold_wanted = trio.Event()
        self.unfolded: dict[str, int] = {}
        self.health = HealthTracker()
        self.observers = Observers(observers)
        self.payloads = Payloads(store, name)

    # ------------------------------------------------------------------ state

    @property
    def database(self) -> Database:
        """The open database; raises the queue's failure, or `QueueClosed`."""
        if self.failure is not None:
            raise self.failure
        if self.db is None:
            raise QueueClosed("the queue is not open")
        return self.db

    def config(self, queue: str) -> QueueConfig:
        """The configuration that applies to ``queue``."""
        return self.configs.get(queue, self.default_config)

    def state(self, queue: str) -> QueueState:
        """The in-memory claim state of ``queue`` (created on first use)."""
        state = self.states.get(queue)
        if state is None:
            state = self.states[queue] = QueueState()
        return state

    def fail(self, error: TaqubaError) -> None:
        """Stop the queue with ``error`` (the first failure wins)."""
        if self.failure is None:
            self.failure = error
            log.error("queue %r stopped: %s", self.name, error)
            # Every delivery this process holds is over: tell the handlers.
            self.leases.fire_all()
        self.stopped.set()

    # ------------------------------------------------------------------ notifications

    def inserts(self, *, hold: bool) -> Inserts:
        """Track the pending keys of one write (see `Inserts`)."""
        return Inserts(self.state, self.notify_inserts, hold=hold)

    def notify_inserts(self, queue: str, pending_keys: Sequence[bytes]) -> None:
        state = self.state(queue)
        for key in pending_keys:
            state.cursor.note_insert(key)
        state.wakeup.notify(min(len(pending_keys), MAX_INSERT_WAKEUPS))

    def notify_completion(self, job_ids: Iterable[str]) -> None:
        """Wake the `wait_for_completion` calls waiting for these jobs (and only those)."""
        waiters = self.completion_waiters
        if not waiters:
            return
        for job_id in job_ids:
            waiter = waiters.pop(job_id, None)
            if waiter is not None:
                waiter.event.set()

    def count_deltas(self, queue: str) -> None:
        """Note one committed stats delta record of ``queue`` (one per queue per transaction)."""
        count = self.unfolded.get(queue, 0) + 1
        self.unfolded[queue] = count
        if count >= FOLD_THRESHOLD:
            self.fold_wanted.set()

    def count_queues(self, queues: Iterable[str]) -> None:
        """`count_deltas` once per distinct queue of one committed transaction."""
        for queue in set(queues):
            self.count_deltas(queue)

    # ------------------------------------------------------------------ observers
    # Each of these is called only when `self.observers.active` is non-empty.

    def observe_enqueued(
        self, prepared: Sequence[Prepared], results: Sequence[EnqueueResult]
    ) -> None:
        """Report the jobs a commit created (``results`` parallel to ``prepared``)."""
        by_queue: dict[str, list[JobRecord]] = {}
        for item, result in zip(prepared, results, strict=False):
            if result.created:
                by_queue.setdefault(item.record.queue_name, []).append(item.job)
        for queue, jobs in by_queue.items():
            self.observers.emit("enqueued", lambda o, q=queue, j=jobs: o.enqueued(q, j))

    def observe_settled(self, claim: Claim, outcome: str, *, dead: bool) -> None:
        """Report one durable settlement of ``claim``."""
        job = claim.job
        now = self.clock.now_ms()
        handler_ms = now - (job.claimed_at if job.claimed_at is not None else now)
        latency_ms = now - job.enqueued_at
        self.observers.emit(
            "settled",
            lambda o: o.settled(
                job.queue_name,
                job,
                outcome,  # pyright: ignore[reportArgumentType]
                dead=dead,
                handler_seconds=max(handler_ms, 0) / 1000,
                latency_seconds=max(latency_ms, 0) / 1000,
            ),
        )

    def commit_timed(self, apply_seconds: float, durable_seconds: float | None) -> None:
        """`Database` listener: a commit's timings."""
        if self.observers.active:
            self.observers.emit("committed", lambda o: o.committed(apply_seconds, durable_seconds))

    def commit_conflicted(self) -> None:
        """`Database` listener: a commit conflicted (it is retried)."""
        if self.observers.active:
            self.observers.emit("conflicted", lambda o: o.conflicted())

    def storage_failed(self, error: StorageError) -> None:
        """`Database` listener: a write failed in storage."""
        if self.observers.active:
            self.observers.emit("storage_error", lambda o: o.storage_error(error))

    # ------------------------------------------------------------------ offloaded payloads

    async def offload(self, prepared: Sequence[Prepared]) -> None:
        """Write the objects of ``prepared``'s oversized payloads (`Payloads.offload`)."""
        if any(
            self.config(item.record.queue_name).payload_offload_threshold is not None
            for item in prepared
        ):
            await self.payloads.offload(
                prepared, lambda q: self.config(q).payload_offload_threshold, self.ids
            )

    async def settle_enqueues(
        self,
        prepared: Sequence[Prepared],
        results: Sequence[EnqueueResult] | None,
        error: BaseException | None,
    ) -> None:
        """Delete the objects of ``prepared`` no committed record references."""
        await self.payloads.settle_enqueues(prepared, results, error, self._committed_refs)

    async def _committed_refs(self, job_ids: Sequence[str]) -> set[str]:
        """The payload refs of the records these jobs have now (reads back an unknown outcome)."""
        txn = await self.database.begin()
        try:
            refs: set[str] = set()
            for job_id in job_ids:
                found = await locate(txn, job_id)
                if found is None:
                    continue
                ref = decode_job(found[1]).payload_ref
                if ref is not None:
                    refs.add(ref)
            return refs
        finally:
            await txn.rollback()

    # ------------------------------------------------------------------ marks

    def hold_scheduled(self, prepared: Iterable[Prepared]) -> list[int]:
        """Hold the promotion mark at the due times of these enqueues until `release`."""
        mark = self.promote_mark
        return [
            mark.hold(item.record.run_at, item.record.run_at)
            for item in prepared
            if item.record.run_at is not None
        ]

    def hold_done(self, queue: str, completed_at: int) -> int:
        """Hold the done mark at a done record being written, until `release`."""
        retention = retention_ms(self.config(queue).keep_done)
        due = None if retention is None else completed_at + retention
        return self.done_mark.hold(completed_at, due)

    @staticmethod
    def release(mark: Mark, holds: Iterable[int]) -> None:
        """Release the holds of a write whose commit attempt is over (whatever its outcome)."""
        for handle in holds:
            mark.release(handle)

    def note_dead_letter(self, queue: str) -> None:
        """Note a committed dead-letter in ``queue`` (its ``failed_at`` is at most now)."""
        retention = retention_ms(self.config(queue).dead_retention)
        if retention is not None:
            self.dead_mark.note(0, self.clock.now_ms() + retention)

    # ------------------------------------------------------------------ quarantine

    async def stage_quarantine(
        self, txn: Transaction, key: bytes, raw: bytes, error: DataError, deltas: Deltas
    ) -> quarantine.Moved:
        """Move an undecodable record aside in ``txn``, taking it out of its counter."""
        moved = await quarantine.stage(txn, key, raw, error, self.clock.now_ms())
        if moved.queue is not None and moved.counter is not None:
            deltas.add(moved.queue, moved.counter, -1)
        return moved

    def quarantined(self, moved: Sequence[quarantine.Moved]) -> None:
        """After the commit that moved records aside: log them once, count their deltas."""
        quarantine.log_moved(moved)
        self.count_queues(m.queue for m in moved if m.queue is not None and m.counter is not None)

    async def quarantine_rows(
        self, db: Database, rows: Sequence[tuple[bytes, bytes, DataError]]
    ) -> None:
        """Move undecodable records aside in one transaction (those unchanged since read)."""
        moved: list[quarantine.Moved] = []

        async def body(txn: Transaction) -> None:
            moved.clear()
            deltas = Deltas()
            for key, raw, error in rows:
                if await txn.get(key) != raw:
                    continue  # rewritten or gone meanwhile
                moved.append(await self.stage_quarantine(txn, key, raw, error, deltas))
            await deltas.stage(txn, self.delta_seqs)

        await run_transaction(db, body, durable=False)
        self.quarantined(moved)


protect(Inserts, Deltas, QueueContext)
