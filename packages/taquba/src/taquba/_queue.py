"""The durable queue: `open_queue` and `Queue`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

import ormsgpack
import trio

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from . import _quarantine as quarantine  # pyright: ignore[reportPrivateUsage]
from . import _views as views
from ._adapter import Database, Transaction, check_commit_deadline, run_transaction
from ._batch import BatchRequest, DropFromBatch, GroupCommit
from ._clock import Clock, SystemClock
from ._config import QueueConfig, backoff_delay
from ._cursor import Bound, ClaimCursor
from ._errors import (
    ClaimLost,
    DataError,
    DuplicateJobId,
    Fenced,
    InvalidArgument,
    InvalidState,
    JobNotFound,
    KvConflict,
    KvValueTooLarge,
    QueueClosed,
    StorageError,
    StorageFatal,
    TaqubaError,
    UsageError,
)
from ._health import HealthTracker, QueueHealth
from ._ids import IdGenerator, validate_job_id
from ._interrupts import plain_interrupt, plain_interrupts, protect
from ._lease import CancelToken, LeaseEntry, LeaseRegistry
from ._marks import Mark
from ._records import (
    MAX_ATTEMPTS,
    MAX_PRIORITY,
    JobRecord,
    JobStatus,
    QueueStats,
    decode_job,
    decode_map,
    encode_job,
    encode_map,
)
from ._store import Store
from ._types import (
    CancelOutcome,
    Claim,
    Effects,
    EnqueueRequest,
    EnqueueResult,
    JobPage,
    KvPage,
    NackResult,
)
from ._validate import (
    check_int,
    check_optional_seconds,
    check_seconds,
    check_type,
    clamp_time,
    datetime_ms,
    duration_ms,
    retention_ms,
)
from ._views import FOLD_BATCH as _FOLD_BATCH
from ._views import SCAN_PAGE as _SCAN_PAGE
from ._views import STATS_FIELDS as _STATS_FIELDS
from ._views import check_kv_key as _check_kv_key
from ._views import decode_counts as _decode_counts
from ._views import decode_delta as _decode_delta
from ._views import locate as _locate
from ._views import prefix_end as _prefix_end
from ._wakeup import Wakeup

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
    from datetime import datetime

    from ._quarantine import QuarantinedRecord

__all__ = ["MAX_KV_VALUE_SIZE", "Queue", "open_queue"]

log = logging.getLogger("taquba")

T = TypeVar("T")

MAX_KV_VALUE_SIZE = 256 * 1024
"""The largest user KV value, in bytes."""

_MAX_INSERT_WAKEUPS = 64
_FOLD_THRESHOLD = 1_000
_MAX_BATCH = 256
_MAX_CLAIM = 2**31 - 1
_KEY_TIME_END = 2**64 - 1
_MAX_FLUSH_INTERVAL = 86_400.0  # every durable call waits a flush; SlateDB refuses huge ones


@dataclass(slots=True, eq=False)
class _CompletionWaiter:
    """The `wait_for_completion` calls of one job: one event, and how many calls share it."""

    event: trio.Event = field(default_factory=trio.Event)
    count: int = 0


@dataclass(slots=True)
class _QueueState:
    """Per-queue in-memory state of an open database."""

    cursor: ClaimCursor = field(default_factory=ClaimCursor)
    lock: trio.Lock = field(default_factory=trio.Lock)
    wakeup: Wakeup = field(default_factory=Wakeup)
    unflushed: dict[bytes, int] = field(default_factory=dict[bytes, int])
    """Pending keys of durable writes whose durability wait has not ended (claims skip
    them), with how many writes hold each."""


class _Inserts:
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
        state: Callable[[str], _QueueState],
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


class _Deltas:
    """Counter changes staged by one transaction, per queue."""

    __slots__ = ("_by_queue",)

    def __init__(self) -> None:
        self._by_queue: dict[str, list[int]] = {}

    def add(self, queue: str, field_name: str, amount: int = 1) -> None:
        row = self._by_queue.setdefault(queue, [0, 0, 0, 0, 0])
        row[_STATS_FIELDS.index(field_name)] += amount

    def move(self, queue: str, source: str, target: str, amount: int = 1) -> None:
        self.add(queue, source, -amount)
        self.add(queue, target, amount)

    async def stage(self, txn: Transaction, ids: IdGenerator) -> None:
        for queue, row in self._by_queue.items():
            if any(row):
                await txn.put(keys.stats_delta_key(queue, ids.next_int()), ormsgpack.packb(row))

    def queues(self) -> Iterable[str]:
        return self._by_queue.keys()


@dataclass(slots=True, eq=False)
class _AckRequest(BatchRequest):
    """One `Queue.ack_with` call waiting to be committed in a batch."""

    claim: Claim
    prepared: list[_Prepared]
    writes: dict[bytes, bytes]
    deletes: list[bytes]
    completed_at: int
    keep_done: bool
    inserts: _Inserts  # follow-up enqueues: hidden from claims until durable
    results: list[EnqueueResult] = field(default_factory=list[EnqueueResult])


@dataclass(slots=True, eq=False)
class _EnqueueRequest(BatchRequest):
    """One `Queue.enqueue` or `Queue.enqueue_batch` call waiting to be committed in a batch."""

    prepared: list[_Prepared]
    writes: dict[bytes, bytes]
    expect: dict[bytes, bytes | None]
    writes_need_creation: bool  # `enqueue`: KV writes only if the job was created
    inserts: _Inserts  # hidden from claims until durable
    results: list[EnqueueResult] = field(default_factory=list[EnqueueResult])


@dataclass(slots=True)
class _Prepared:
    """An enqueue request resolved to a record before its transaction."""

    record: JobRecord
    key: bytes
    explicit_id: bool


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
    ) -> None:
        """Library-internal: use `open_queue`."""
        self._commit_deadline = commit_deadline
        self._store = store
        self._name = name
        self._default_config = config
        self._configs = dict(queues)
        self._clock = clock
        self._flush_interval = flush_interval
        self._reaper_interval = reaper_interval
        self._scheduler_interval = scheduler_interval
        self._ids = IdGenerator(clock)
        self._leases = LeaseRegistry()
        self._states: dict[str, _QueueState] = {}
        self._completion_waiters: dict[str, _CompletionWaiter] = {}
        # Low-water marks of the time-ordered background scans (see _marks.py).
        self._promote_mark = Mark()
        self._done_mark = Mark()
        self._dead_mark = Mark()
        self._promote_lock = trio.Lock()
        self._sweep_lock = trio.Lock()
        self._stopped = trio.Event()
        self._failure: TaqubaError | None = None
        self._db: Database | None = None
        self._fold_wanted = trio.Event()
        self._unfolded: dict[str, int] = {}
        self._health = HealthTracker()
        self._acks = GroupCommit(
            lambda: self._database, self._stage_acks, self._acks_committed, max_batch=_MAX_BATCH
        )
        self._enqueues = GroupCommit(
            lambda: self._database,
            self._stage_enqueues,
            self._enqueues_committed,
            max_batch=_MAX_BATCH,
            cancellable=True,
        )

    # ------------------------------------------------------------------ properties

    @property
    def clock(self) -> Clock:
        """The clock every timestamp of this queue is read from; layers share it."""
        return self._clock

    @property
    def store(self) -> Store:
        """The store the queue database lives in."""
        return self._store

    @property
    def name(self) -> str:
        """The database name inside the store."""
        return self._name

    def config(self, queue: str) -> QueueConfig:
        """The configuration that applies to ``queue``."""
        return self._configs.get(queue, self._default_config)

    def next_job_id(self) -> str:
        """A fresh monotonic ULID, for callers that must know a job's id before enqueueing it."""
        return self._ids.next_id()

    # ------------------------------------------------------------------ lifecycle

    @property
    def _database(self) -> Database:
        if self._failure is not None:
            raise self._failure
        if self._db is None:
            raise QueueClosed("the queue is not open")
        return self._db

    def _state(self, queue: str) -> _QueueState:
        state = self._states.get(queue)
        if state is None:
            state = self._states[queue] = _QueueState()
        return state

    async def _open(self, *, recover: bool = True) -> None:
        self._db = await Database.open(
            self._store,
            self._name,
            flush_interval=self._flush_interval,
            commit_deadline=self._commit_deadline,
        )
        try:
            await self._restore_cursors()
            if recover:
                await self._recover_claims()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._db.close()
            self._db = None
            raise

    async def _restore_cursors(self) -> None:
        db = self._database
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
                self._states[queue] = _QueueState(
                    cursor=ClaimCursor(bound, known_empty=bool(data.get("known_empty")))
                )
            except (DataError, ValueError, UnicodeDecodeError):
                log.warning("ignoring an unreadable claim-cursor record %r", key)
        # Delete durably before serving: a stale record after a later crash could hide jobs.
        await run_transaction(db, body, durable=True)

    async def _recover_claims(self) -> None:
        """Requeue (or dead-letter) every claim a previous process left behind."""
        db = self._database
        prefix = keys.space_prefix(keys.Space.CLAIMED)
        start: bytes | None = None
        while True:
            rows = await db.scan(prefix, start=start, start_inclusive=False, limit=_SCAN_PAGE)
            claimed = [key for key, _ in rows]  # undecodable ones are quarantined on the way
            if claimed:
                await self._end_claims(
                    [(key, _always) for key in claimed], reason="claim interrupted by process exit"
                )
            if len(rows) < _SCAN_PAGE:
                return
            start = rows[-1][0]

    async def _end_claims(
        self, claims: Sequence[tuple[bytes, Callable[[], bool]]], *, reason: str
    ) -> list[bool]:
        """Requeue or dead-letter abandoned claims in one transaction (non-durable, idempotent).

        Shared by open-time recovery and the reaper. Each job goes back to its pending key (no
        attempt is consumed: the next claim counts one), or to the dead-letter inbox with
        ``reason`` when it is out of attempts. Each claim's fence (the reaper's lease check) is
        re-checked inside every transaction attempt; a claim that fails it, is already gone or
        cannot be decoded is left alone. Returns, per claim, whether its record moved. One
        transaction for a whole page keeps a storm of expired leases from rewinding the claim
        cursor once per job. A claimed record that cannot be decoded is quarantined.
        """
        now = self._clock.now_ms()
        outcome: list[tuple[int, str, bytes, JobStatus, str]] = []
        # Not held: the claims were made from durable pending jobs, so a crash before this
        # write is durable leaves the jobs claimable anyway.
        inserts = self._inserts(hold=False)
        bad: list[quarantine.Moved] = []

        async def body(txn: Transaction) -> None:
            outcome.clear()
            bad.clear()
            deltas = _Deltas()
            for index, (claimed, still_abandoned) in enumerate(claims):
                if not still_abandoned():
                    continue  # settled meanwhile
                raw = await txn.get(claimed)
                if raw is None:
                    continue  # already settled, or the residue of a claim that never committed
                try:
                    job = decode_job(raw)
                except DataError as exc:
                    bad.append(await self._stage_quarantine(txn, claimed, raw, exc, deltas))
                    continue
                await txn.delete(claimed)
                if job.attempts >= job.max_attempts:
                    record = job.replace(
                        status=JobStatus.DEAD, claimed_at=None, last_error=reason, failed_at=now
                    )
                    key = keys.dead_key(job.queue, job.id)
                    deltas.move(job.queue, "claimed", "dead")
                else:
                    record = job.replace(status=JobStatus.PENDING, claimed_at=None)
                    key = keys.pending_key(job.queue, job.priority, job.id)
                    deltas.move(job.queue, "claimed", "pending")
                    inserts.add(job.queue, key)
                # The index keeps pointing at the pending key (see _locate).
                await txn.put(key, encode_job(record))
                outcome.append((index, job.queue, key, record.status, job.id))
            await deltas.stage(txn, self._ids)

        try:
            await run_transaction(self._database, body, durable=False)
        finally:
            inserts.finish()  # also when the outcome is unknown
        self._quarantined(bad)
        moved = [False] * len(claims)
        dead: list[str] = []
        for index, queue, _, status, job_id in outcome:
            moved[index] = True
            if status is not JobStatus.PENDING:
                dead.append(job_id)
                self._note_dead_letter(queue)
        for queue in {queue for _, queue, _, _, _ in outcome}:
            self._count_deltas(queue)
        self._notify_completion(dead)
        return moved

    async def _close(self) -> None:
        db = self._db
        if db is None:
            return
        try:
            if self._failure is None and db.close_reason() is None:
                await self._persist_cursors(db)
        except TaqubaError as exc:
            log.warning("could not persist claim cursors at close: %s", exc)
        finally:
            self._db = None
            if self._failure is None:
                self._failure = QueueClosed("the queue has been closed")
            self._stopped.set()
            await db.close()

    async def _persist_cursors(self, db: Database) -> None:
        snapshots: list[tuple[str, Bound | None, bool]] = []
        for queue, state in self._states.items():
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

    def _fail(self, error: TaqubaError) -> None:
        if self._failure is None:
            self._failure = error
            log.error("queue %r stopped: %s", self._name, error)
            # Every delivery this process holds is over: tell the handlers.
            self._leases.fire_all()
        self._stopped.set()

    @property
    def failure(self) -> TaqubaError | None:
        """Why the queue stopped (`Fenced`, `QueueClosed`, ...), or None while it runs."""
        return self._failure

    def health(self) -> QueueHealth:
        """How the queue's loops are faring: whether any is retrying storage errors now.

        Worker loops and the background tasks (reaper, scheduler, stats fold) retry transient
        errors with backoff instead of stopping; a health check can report
        ``not queue.health().healthy`` while they do (see `QueueHealth`).
        """
        return self._health.snapshot(self._failure)

    async def wait_stopped(self) -> None:
        """Wait until the queue is closed or fails (see `failure`)."""
        await self._stopped.wait()

    async def _watch(self) -> None:
        db = self._db
        if db is None:
            return
        try:
            await db.watch()
        except (Fenced, StorageFatal) as exc:
            self._fail(exc)

    # ------------------------------------------------------------------ notifications

    def _inserts(self, *, hold: bool) -> _Inserts:
        """Track the pending keys of one write (see `_Inserts`)."""
        return _Inserts(self._state, self._notify_inserts, hold=hold)

    def _notify_inserts(self, queue: str, pending_keys: Sequence[bytes]) -> None:
        state = self._state(queue)
        for key in pending_keys:
            state.cursor.note_insert(key)
        state.wakeup.notify(min(len(pending_keys), _MAX_INSERT_WAKEUPS))

    def _notify_completion(self, job_ids: Iterable[str]) -> None:
        """Wake the `wait_for_completion` calls waiting for these jobs (and only those)."""
        waiters = self._completion_waiters
        if not waiters:
            return
        for job_id in job_ids:
            waiter = waiters.pop(job_id, None)
            if waiter is not None:
                waiter.event.set()

    def _count_deltas(self, queue: str) -> None:
        """Note one committed stats delta record of ``queue`` (one per queue per transaction)."""
        count = self._unfolded.get(queue, 0) + 1
        self._unfolded[queue] = count
        if count >= _FOLD_THRESHOLD:
            self._fold_wanted.set()

    def _count_queues(self, queues: Iterable[str]) -> None:
        """`_count_deltas` once per distinct queue of one committed transaction."""
        for queue in set(queues):
            self._count_deltas(queue)

    # ------------------------------------------------------------------ enqueue

    def _run_at_ms(self, run_at: object, delay: object, now: int) -> int | None:
        if run_at is not None and delay is not None:
            raise UsageError("pass either run_at or delay, not both")
        if run_at is not None:
            at = datetime_ms("run_at", run_at)
            return at if at > now else None
        seconds = check_optional_seconds("delay", delay)
        if not seconds:
            return None
        return clamp_time(now + duration_ms(seconds))

    def _prepare(self, request: EnqueueRequest, now: int) -> _Prepared:
        check_type("requests", request, EnqueueRequest, "EnqueueRequest objects")
        queue = keys.validate_queue_name(request.queue)
        payload = request.payload
        if not isinstance(payload, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError(f"payload must be bytes, not {type(payload).__name__}")
        config = self.config(queue)
        priority = config.default_priority
        if request.priority is not None:
            priority = check_int("priority", request.priority, low=0, high=MAX_PRIORITY)
        max_attempts = config.max_attempts
        if request.max_attempts is not None:
            max_attempts = check_int("max_attempts", request.max_attempts, low=1, high=MAX_ATTEMPTS)
        if request.dedup_key is not None and (
            not isinstance(request.dedup_key, str) or not request.dedup_key  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise UsageError("dedup_key must be a non-empty str")
        headers = dict(request.headers)
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise UsageError("headers must map str to str")
        explicit = request.job_id is not None
        job_id = validate_job_id(request.job_id) if explicit else self._ids.next_id()
        run_at = self._run_at_ms(request.run_at, request.delay, now)
        record = JobRecord(
            id=job_id,
            queue=queue,
            payload=bytes(payload),
            status=JobStatus.SCHEDULED if run_at is not None else JobStatus.PENDING,
            priority=priority,
            attempts=0,
            max_attempts=max_attempts,
            enqueued_at=now,
            headers=headers,
            run_at=run_at,
            dedup_key=request.dedup_key,
        )
        key = (
            keys.scheduled_key(run_at, queue, job_id)
            if run_at is not None
            else keys.pending_key(queue, priority, job_id)
        )
        return _Prepared(record, key, explicit)

    async def _stage_enqueue(
        self, txn: Transaction, prepared: _Prepared, deltas: _Deltas, inserts: _Inserts
    ) -> EnqueueResult:
        job = prepared.record
        if prepared.explicit_id and await txn.get(keys.index_key(job.id)) is not None:
            raise DuplicateJobId(job.id)
        if job.dedup_key is not None:
            dedup = keys.dedup_key(job.queue, job.dedup_key)
            existing = await txn.get(dedup)
            if existing is not None:
                return EnqueueResult(existing.decode("ascii"), created=False)
            await txn.put(dedup, job.id.encode("ascii"))
        await txn.put(prepared.key, encode_job(job))
        await txn.put(keys.index_key(job.id), prepared.key)
        if job.run_at is None:
            inserts.add(job.queue, prepared.key)
        deltas.add(job.queue, "scheduled" if job.run_at is not None else "pending")
        return EnqueueResult(job.id, created=True)

    async def enqueue(
        self,
        queue: str,
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
        """Add a job to ``queue``; return once it is durable.

        Concurrent enqueues are committed together (see `ack_with`); each keeps its own outcome.
        A cancelled caller gets `trio.Cancelled` only while nothing has been written (before
        its request joins a batch); once in a batch, the enqueue runs to its end and returns
        its result (the caller's next checkpoint raises `Cancelled`). The job becomes
        claimable once durable (see `claim_batch`).

        Args:
            queue: the queue name.
            payload: the job's bytes.
            priority: claim priority (lower first); default the queue's.
            run_at: do not claim before this timezone-aware time (a past time means now).
            delay: do not claim for this many seconds (exclusive with ``run_at``; finite and
                non-negative). A due time past `MAX_TIMESTAMP_MS` is clamped to it.
            dedup_key: if a pending or scheduled job on ``queue`` holds this key, write nothing
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
            queue=queue,
            payload=payload,
            priority=priority,
            run_at=run_at,
            delay=delay,
            dedup_key=dedup_key,
            headers=headers or {},
            max_attempts=max_attempts,
            job_id=job_id,
        )
        batch = _EnqueueRequest(
            prepared=[self._prepare(request, self._clock.now_ms())],
            writes=_check_kv_writes(kv_writes or {}),
            expect=_check_kv_expect(kv_expect or {}),
            writes_need_creation=True,
            inserts=self._inserts(hold=True),
        )
        holds = self._hold_scheduled(batch.prepared)
        try:
            await self._enqueues.submit(batch)
        finally:
            self._release(self._promote_mark, holds)
            batch.inserts.finish()  # claimable now: durable, or of unknown outcome
        return batch.results[0]

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
        now = self._clock.now_ms()
        prepared = [self._prepare(request, now) for request in requests]
        writes = _check_kv_writes(kv_writes or {})
        expect = _check_kv_expect(kv_expect or {})
        if not prepared and not writes:
            return []
        seen: set[str] = set()
        for item in prepared:
            if item.record.id in seen:
                raise DuplicateJobId(item.record.id)
            seen.add(item.record.id)
        batch = _EnqueueRequest(
            prepared=prepared,
            writes=writes,
            expect=expect,
            writes_need_creation=False,
            inserts=self._inserts(hold=True),
        )
        holds = self._hold_scheduled(prepared)
        try:
            await self._enqueues.submit(batch)
        finally:
            self._release(self._promote_mark, holds)
            batch.inserts.finish()  # claimable now: durable, or of unknown outcome
        return batch.results

    async def _stage_enqueues(
        self, txn: Transaction, batch: list[_EnqueueRequest]
    ) -> list[tuple[_EnqueueRequest, TaqubaError]]:
        """Stage concurrent enqueue calls in one transaction (rerun from scratch on conflict).

        Requests are staged in arrival order, so each sees the writes of those before it (a
        dedup key or job id taken earlier in the batch counts as taken). A request that fails
        (`KvConflict`, `DuplicateJobId`) is dropped and the batch restaged without it.
        """
        deltas = _Deltas()
        for request in batch:
            try:
                await _check_expectations(txn, request.expect)
                request.results = [
                    await self._stage_enqueue(txn, item, deltas, request.inserts)
                    for item in request.prepared
                ]
            except TaqubaError as exc:
                raise DropFromBatch(request, exc) from exc
            if not request.writes_need_creation or any(r.created for r in request.results):
                for key, value in request.writes.items():
                    await txn.put(keys.user_key(key), value)
        await deltas.stage(txn, self._ids)
        return []

    def _enqueues_committed(self, committed: list[_EnqueueRequest]) -> None:
        # The cursor learns of the new keys from each caller's `_Inserts.finish`.
        self._count_queues(item.record.queue for r in committed for item in r.prepared)

    # ------------------------------------------------------------------ claim

    def _lease_ms(self, queue: str, lease: float | None) -> int:
        if lease is None:
            return duration_ms(self.config(queue).lease_duration)
        return duration_ms(check_seconds("lease", lease, positive=True))

    async def claim(self, queue: str, *, lease: float | None = None) -> Claim | None:
        """Claim the next job of ``queue``, or return None if none is ready.

        The claim commits without waiting for durability: a claim lost in a crash leaves the
        job pending, to be delivered again after recovery.
        """
        claims = await self.claim_batch(queue, 1, lease=lease)
        return claims[0] if claims else None

    async def claim_batch(
        self, queue: str, max_jobs: int, *, lease: float | None = None
    ) -> list[Claim]:
        """Claim up to ``max_jobs`` jobs of ``queue`` in one transaction.

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
        while True:
            claims, quarantined_only = await self._claim_batch_once(queue, max_jobs, lease)
            if not quarantined_only:
                return claims

    async def _claim_batch_once(
        self, queue: str, max_jobs: int, lease: float | None
    ) -> tuple[list[Claim], bool]:
        """One claim transaction; also whether it only quarantined records, with more to scan."""
        keys.validate_queue_name(queue)
        lease_ms = self._lease_ms(queue, lease)
        max_jobs = check_int("max_jobs", max_jobs, low=0, high=_MAX_CLAIM)
        db = self._database
        state = self._state(queue)
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
                now = self._clock.now_ms()
                bound = ticket.bound
                rows = await self._scan_claimable(txn, state, prefix, bound, max_jobs + 1)
                more = len(rows) > max_jobs
                rows = rows[:max_jobs]
                if not rows:
                    return
                deltas = _Deltas()
                expires = clamp_time(now + lease_ms)
                for key, value in rows:
                    try:
                        job = decode_job(value)
                    except DataError as exc:  # one bad record must not block the queue
                        bad.append(await self._stage_quarantine(txn, key, value, exc, deltas))
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
                    self._leases.insert(queue, job.id, LeaseEntry(token, expires, cancel))
                    claims.append(Claim(claimed, token, self, cancel))
                    taken.append(key)
                    last[0] = key
                deltas.move(queue, "pending", "claimed", len(taken))
                await deltas.stage(txn, self._ids)

            try:
                await run_transaction(db, body, durable=False)
            except BaseException:
                state.cursor.abort_claim(ticket)
                raise
            state.cursor.finish_claim(ticket, last[0], ran_dry=not more)
            self._quarantined(bad)
        if claims or bad:
            self._count_deltas(queue)
            if more:
                # More jobs are waiting: pass one wakeup on, so a backlog keeps waking idle
                # workers (an insert made before anyone waited left a single permit).
                state.wakeup.notify_one()
        return claims, not claims and bool(bad) and more

    async def _scan_claimable(
        self,
        txn: Transaction,
        state: _QueueState,
        prefix: bytes,
        bound: Bound | None,
        want: int,
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``want`` pending rows from ``bound`` on, skipping keys not yet durable.

        A skipped (held) key may end up behind the cursor's bound; its write announces it
        when its durability wait ends (`_Inserts.finish`), which moves the bound back and
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

    @plain_interrupts
    async def wait_for_jobs_on(self, queue: str) -> None:
        """Wait until a job may be claimable on ``queue``.

        Wakes one waiter per inserted job. A wakeup is a hint, not a promise: another worker
        may claim the job first. Bound the wait with `trio.move_on_after`. Raises the queue's
        failure (`Fenced`, `QueueClosed`) if it stops while waiting.
        """
        keys.validate_queue_name(queue)
        self._database  # noqa: B018 - raises if the queue is closed or failed
        state = self._state(queue)
        async with trio.open_nursery() as nursery:

            async def stop_on_failure() -> None:
                await self._stopped.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_failure)
            await state.wakeup.wait()
            nursery.cancel_scope.cancel()
        self._database  # noqa: B018 - raise the failure that ended the wait, if any

    async def claim_with_wait(self, queue: str, *, lease: float | None = None) -> Claim:
        """Claim the next job of ``queue``, waiting as long as it takes.

        Bound it with `trio.move_on_after`: a lost race for a job does not end the wait. A
        claim that fills its batch passes one wakeup on, so a backlog keeps waking workers.
        """
        while True:
            claim = await self.claim(queue, lease=lease)
            if claim is not None:
                return claim
            await self.wait_for_jobs_on(queue)

    # ------------------------------------------------------------------ settlement

    def _check_claim(self, claim: object, operation: str) -> Claim:
        if not isinstance(claim, Claim):
            raise InvalidState(
                f"{operation} takes a Claim returned by claim(); got {type(claim).__name__}"
            )
        if claim._owner is not self:  # pyright: ignore[reportPrivateUsage]
            raise ClaimLost(claim.id, "the claim belongs to another queue handle")
        return claim

    async def _take_claim(self, txn: Transaction, claim: Claim) -> JobRecord:
        """The settlement fence: the claim must still hold its lease and its record."""
        token = claim._token  # pyright: ignore[reportPrivateUsage]
        if self._leases.get(claim.queue, claim.id, token) is None:
            raise ClaimLost(claim.id)
        key = keys.claimed_key(claim.queue, claim.id)
        raw = await txn.get(key)
        if raw is None:
            raise ClaimLost(claim.id, "the claimed record no longer exists")
        await txn.delete(key)
        return decode_job(raw)

    def _prepare_effects(
        self, effects: Effects | None
    ) -> tuple[list[_Prepared], dict[bytes, bytes], list[bytes]]:
        if effects is None:
            return [], {}, []
        if not isinstance(effects, Effects):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("effects must be an Effects instance")
        now = self._clock.now_ms()
        prepared = [self._prepare(request, now) for request in effects.enqueues]
        writes = _check_kv_writes(effects.kv_writes)
        deletes = [_check_kv_key(key) for key in effects.kv_deletes]
        return prepared, writes, deletes

    async def _stage_effects(
        self,
        txn: Transaction,
        prepared: Sequence[_Prepared],
        writes: Mapping[bytes, bytes],
        deletes: Sequence[bytes],
        deltas: _Deltas,
        inserts: _Inserts,
    ) -> list[EnqueueResult]:
        results = [await self._stage_enqueue(txn, item, deltas, inserts) for item in prepared]
        for key, value in writes.items():
            await txn.put(keys.user_key(key), value)
        for key in deletes:
            await txn.delete(keys.user_key(key))
        return results

    async def _settle(
        self,
        claim: Claim,
        stage: Callable[[Transaction, JobRecord, _Deltas, _Inserts], Awaitable[T]],
    ) -> T:
        """Run a settlement: fence, stage, durable commit, then release the lease.

        Pending keys the settlement inserts (a retry, follow-up enqueues) are held from
        claims until the commit is durable, and announced to the cursor whatever the outcome.
        """
        inserts = self._inserts(hold=True)

        async def body(txn: Transaction) -> T:
            stored = await self._take_claim(txn, claim)
            deltas = _Deltas()
            result = await stage(txn, stored, deltas, inserts)
            await deltas.stage(txn, self._ids)
            return result

        try:
            result = await run_transaction(self._database, body, durable=True)
        finally:
            inserts.finish()
        self._leases.remove(claim.queue, claim.id, claim._token)  # pyright: ignore[reportPrivateUsage]
        self._count_deltas(claim.queue)
        return result

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
        """
        claim = self._check_claim(claim, "ack")
        prepared, writes, deletes = self._prepare_effects(effects)
        request = _AckRequest(
            claim=claim,
            prepared=prepared,
            writes=writes,
            deletes=deletes,
            completed_at=self._clock.now_ms(),
            keep_done=self.config(claim.queue).keep_done is not None,
            inserts=self._inserts(hold=True),
        )
        holds = self._hold_scheduled(prepared)
        done_holds = (
            [self._hold_done(claim.queue, request.completed_at)] if request.keep_done else []
        )
        try:
            await self._acks.submit(request)
        finally:
            self._release(self._promote_mark, holds)
            self._release(self._done_mark, done_holds)
            request.inserts.finish()  # follow-ups claimable now: durable, or unknown
        return request.results

    async def _stage_acks(
        self, txn: Transaction, batch: list[_AckRequest]
    ) -> list[tuple[_AckRequest, TaqubaError]]:
        """Stage a batch of acks (rerun from scratch on conflict); return the lost claims."""
        lost: list[tuple[_AckRequest, TaqubaError]] = []
        deltas = _Deltas()
        seen: set[int] = set()
        for request in batch:
            claim = request.claim
            token = claim._token  # pyright: ignore[reportPrivateUsage]
            if token in seen or self._leases.get(claim.queue, claim.id, token) is None:
                lost.append((request, ClaimLost(claim.id)))
                continue
            seen.add(token)
            try:
                request.results = await self._stage_ack(txn, request, deltas)
            except TaqubaError as exc:
                raise DropFromBatch(request, exc) from exc
        await deltas.stage(txn, self._ids)
        return lost

    def _acks_committed(self, committed: list[_AckRequest]) -> None:
        for request in committed:
            claim = request.claim
            self._leases.remove(claim.queue, claim.id, claim._token)  # pyright: ignore[reportPrivateUsage]
        self._count_queues(
            [r.claim.queue for r in committed]
            + [item.record.queue for r in committed for item in r.prepared]
        )
        self._notify_completion(r.claim.id for r in committed)

    async def _stage_ack(
        self, txn: Transaction, request: _AckRequest, deltas: _Deltas
    ) -> list[EnqueueResult]:
        claim = request.claim
        key = keys.claimed_key(claim.queue, claim.id)
        # The record must still be there. The lease alone is not enough: a racing settlement
        # of the same claim removes the lease only after its commit is durable, and between
        # its commit and then, a blind delete here would commit and count the job twice.
        raw = await txn.get(key)
        if raw is None:
            raise ClaimLost(claim.id, "the claimed record no longer exists")
        if request.keep_done:
            at = request.completed_at
            done = decode_job(raw).replace(status=JobStatus.DONE, completed_at=at)
            done_key = keys.done_key(at, claim.queue, claim.id)
            await txn.put(done_key, encode_job(done))
            await txn.put(keys.index_key(claim.id), done_key)
        else:
            await txn.delete(keys.index_key(claim.id))
        await txn.delete(key)
        deltas.move(claim.queue, "claimed", "done")
        return await self._stage_effects(
            txn, request.prepared, request.writes, request.deletes, deltas, request.inserts
        )

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
        """
        claim = self._check_claim(claim, "nack")
        if not isinstance(error, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("error must be a str")
        retry_after = check_optional_seconds("retry_after", retry_after)
        writes = _check_kv_writes(kv_writes or {})
        prepared, effect_writes, deletes = self._prepare_effects(effects_if_dead)
        config = self.config(claim.queue)
        now = self._clock.now_ms()
        holds = self._hold_scheduled(prepared)  # held until the settlement is over

        async def stage(
            txn: Transaction, stored: JobRecord, deltas: _Deltas, inserts: _Inserts
        ) -> NackResult:
            for key, value in writes.items():
                await txn.put(keys.user_key(key), value)
            if stored.attempts >= stored.max_attempts:
                record = stored.replace(
                    status=JobStatus.DEAD, claimed_at=None, last_error=error, failed_at=now
                )
                key = keys.dead_key(stored.queue, stored.id)
                deltas.move(stored.queue, "claimed", "dead")
                await txn.put(key, encode_job(record))
                results = await self._stage_effects(
                    txn, prepared, effect_writes, deletes, deltas, inserts
                )
                return NackResult(dead=True, enqueued=results)
            delay = backoff_delay(
                stored.attempts, config.retry_backoff_base, config.retry_backoff_max
            )
            if retry_after is not None:
                delay = max(delay, retry_after)
            delay_ms = duration_ms(delay)  # an uncapped backoff may be infinite
            if delay_ms > 0:
                run_at = clamp_time(now + delay_ms)
                holds.append(self._promote_mark.hold(run_at, run_at))
                record = stored.replace(
                    status=JobStatus.SCHEDULED, claimed_at=None, last_error=error, run_at=run_at
                )
                key = keys.scheduled_key(run_at, stored.queue, stored.id)
                deltas.move(stored.queue, "claimed", "scheduled")
                await txn.put(keys.index_key(stored.id), key)
            else:
                record = stored.replace(status=JobStatus.PENDING, claimed_at=None, last_error=error)
                key = keys.pending_key(stored.queue, stored.priority, stored.id)
                deltas.move(stored.queue, "claimed", "pending")
                inserts.add(stored.queue, key)
            await txn.put(key, encode_job(record))
            return NackResult(dead=False, enqueued=[])

        try:
            result = await self._settle(claim, stage)
        finally:
            self._release(self._promote_mark, holds)
        if result.dead:
            self._count_queues({item.record.queue for item in prepared} - {claim.queue})
            self._note_dead_letter(claim.queue)
            self._notify_completion((claim.id,))
        return result

    async def dead_letter(
        self, claim: Claim, reason: str, *, effects: Effects | None = None
    ) -> list[EnqueueResult]:
        """Move a claimed job to the dead-letter inbox at once (no retry).

        ``effects`` commit atomically with the dead-letter; returns one result per follow-up
        enqueue.

        Raises:
            ClaimLost: the claim is gone; nothing was written.
        """
        claim = self._check_claim(claim, "dead_letter")
        if not isinstance(reason, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("reason must be a str")
        prepared, writes, deletes = self._prepare_effects(effects)
        now = self._clock.now_ms()

        async def stage(
            txn: Transaction, stored: JobRecord, deltas: _Deltas, inserts: _Inserts
        ) -> list[EnqueueResult]:
            record = stored.replace(
                status=JobStatus.DEAD, claimed_at=None, last_error=reason, failed_at=now
            )
            key = keys.dead_key(stored.queue, stored.id)
            await txn.put(key, encode_job(record))
            deltas.move(stored.queue, "claimed", "dead")
            return await self._stage_effects(txn, prepared, writes, deletes, deltas, inserts)

        holds = self._hold_scheduled(prepared)
        try:
            results = await self._settle(claim, stage)
        finally:
            self._release(self._promote_mark, holds)
        self._count_queues({item.record.queue for item in prepared} - {claim.queue})
        self._note_dead_letter(claim.queue)
        self._notify_completion((claim.id,))
        return results

    def renew_lease(self, claim: Claim, extension: float) -> int:
        """Set the claim's lease to expire ``extension`` seconds from now; return the new expiry.

        No write happens: leases are process state. May shorten the lease. ``extension`` must
        be a finite positive number of seconds; an expiry past `MAX_TIMESTAMP_MS` is clamped.

        Raises:
            ClaimLost: the claim no longer holds its lease.
            InvalidArgument: a bad ``extension``.
        """
        claim = self._check_claim(claim, "renew_lease")
        seconds = check_seconds("extension", extension, positive=True)
        expires = clamp_time(self._clock.now_ms() + duration_ms(seconds))
        if self._db is None or not self._leases.extend(
            claim.queue,
            claim.id,
            claim._token,  # pyright: ignore[reportPrivateUsage]
            expires,
        ):
            raise ClaimLost(claim.id)
        return expires

    def lease_expiry(self, claim: Claim) -> int | None:
        """When the claim's lease expires (ms since the epoch), or None if it is gone."""
        entry = self._leases.get(claim.queue, claim.id, claim._token)  # pyright: ignore[reportPrivateUsage]
        return entry.expires_at if entry else None

    async def requeue_dead_job(self, job: JobRecord) -> None:
        """Revive a dead-lettered job as pending, with its attempts reset.

        Raises:
            InvalidState: ``job`` is not a dead record.
            JobNotFound: its dead record no longer exists (e.g. swept by retention).
        """
        if not isinstance(job, JobRecord):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidState("requeue_dead_job takes a JobRecord")
        if job.status is not JobStatus.DEAD:
            raise InvalidState(f"job {job.id!r} is {job.status.value}, not dead")
        dead = keys.dead_key(job.queue, job.id)
        inserts = self._inserts(hold=True)

        async def body(txn: Transaction) -> None:
            raw = await txn.get(dead)
            if raw is None:
                raise JobNotFound(job.id)
            stored = decode_job(raw)
            record = stored.replace(
                status=JobStatus.PENDING,
                attempts=0,
                last_error=None,
                claimed_at=None,
                failed_at=None,
                cancel_requested=False,
            )
            key = keys.pending_key(stored.queue, stored.priority, stored.id)
            await txn.delete(dead)
            await txn.put(key, encode_job(record))
            await txn.put(keys.index_key(stored.id), key)
            deltas = _Deltas()
            deltas.move(stored.queue, "dead", "pending")
            await deltas.stage(txn, self._ids)
            inserts.add(stored.queue, key)

        try:
            await run_transaction(self._database, body, durable=True)
        finally:
            inserts.finish()  # claimable now: durable, or of unknown outcome
        self._count_deltas(job.queue)

    # ------------------------------------------------------------------ cancel and wait

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job.

        A pending or scheduled job is deleted (`CancelOutcome.REMOVED`). A claimed job is
        marked, and its handler's cancel signal fires (`CancelOutcome.REQUESTED`): the handler
        decides how to stop, and settles the claim as usual.
        """
        validate_job_id(job_id)
        index = keys.index_key(job_id)
        outcome: list[tuple[CancelOutcome, JobRecord | None]] = []

        async def body(txn: Transaction) -> None:
            outcome.clear()
            found = await _locate(txn, job_id)
            if found is None:
                outcome.append((CancelOutcome.NOT_FOUND, None))
                return
            key, raw = found
            job = decode_job(raw)
            if job.status in (JobStatus.PENDING, JobStatus.SCHEDULED):
                await txn.delete(key)
                await txn.delete(index)
                if job.dedup_key is not None:
                    dedup = keys.dedup_key(job.queue, job.dedup_key)
                    if await txn.get(dedup) == job.id.encode("ascii"):
                        await txn.delete(dedup)
                deltas = _Deltas()
                deltas.add(job.queue, job.status.value, -1)
                await deltas.stage(txn, self._ids)
                outcome.append((CancelOutcome.REMOVED, job))
            elif job.status is JobStatus.CLAIMED:
                if not job.cancel_requested:
                    await txn.put(key, encode_job(job.replace(cancel_requested=True)))
                outcome.append((CancelOutcome.REQUESTED, job))
            else:
                outcome.append((CancelOutcome.NOT_FOUND, None))

        await run_transaction(self._database, body, durable=True)
        result, job = outcome[0]
        if job is not None:
            entry = self._leases.lookup(job.queue, job.id)
            if entry is not None:
                entry.cancel.fire()
            if result is CancelOutcome.REMOVED:
                self._count_deltas(job.queue)
                self._notify_completion((job.id,))
        return result

    @plain_interrupts
    async def wait_for_completion(self, job_id: str) -> JobRecord | None:
        """Wait until the job is done, dead, or gone.

        Returns the done or dead record if one is kept, else None (acknowledged without
        ``keep_done``, or cancelled). Bound the wait with `trio.move_on_after`. Only this
        job's own settlement wakes the wait, so many concurrent waiters stay cheap.

        Raises:
            JobNotFound: no job with this id exists when the wait starts.
        """
        validate_job_id(job_id)
        first = True
        while True:
            # Registered before the read, so a completion committed meanwhile is not missed.
            # Only this job's settlement wakes the wait: a thousand waiters cost one read each
            # per completion of their own job, not per completion in the queue.
            waiter = self._completion_waiters.get(job_id)
            if waiter is None:
                waiter = self._completion_waiters[job_id] = _CompletionWaiter()
            waiter.count += 1
            try:
                job = await self.get_job(job_id)
                if job is None:
                    if first:
                        raise JobNotFound(job_id)
                    return None
                if job.status in (JobStatus.DONE, JobStatus.DEAD):
                    return job
                first = False
                async with trio.open_nursery() as nursery:

                    async def stop_on_failure() -> None:
                        await self._stopped.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(stop_on_failure)
                    await waiter.event.wait()
                    nursery.cancel_scope.cancel()
            finally:
                waiter.count -= 1
                if waiter.count == 0 and self._completion_waiters.get(job_id) is waiter:
                    del self._completion_waiters[job_id]
            self._database  # noqa: B018 - raise the failure that ended the wait, if any

    # ------------------------------------------------------------------ inspection

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job's current record in any state, or None if it does not exist."""
        validate_job_id(job_id)
        txn = await self._database.begin()
        try:
            found = await _locate(txn, job_id)
        finally:
            await txn.rollback()
        return decode_job(found[1]) if found is not None else None

    async def stats(self, queue: str) -> QueueStats:
        """The counters of ``queue``; they always equal a recount of its records."""
        keys.validate_queue_name(queue)
        txn = await self._database.begin()
        try:
            return (await views.read_stats(txn, queue))[1]
        finally:
            await txn.rollback()

    async def list_queues(self) -> list[str]:
        """Every queue that has ever held a job, sorted by name."""
        return await views.list_queue_names(self._database)

    async def list_jobs(
        self, queue: str, status: JobStatus, *, cursor: bytes | None = None, limit: int = 100
    ) -> JobPage:
        """One page of ``queue``'s jobs in ``status``.

        Pending jobs come in claim order, claimed and dead jobs in id order, scheduled jobs by
        due time and done jobs by completion time. Pass ``next_cursor`` back to continue. The
        listing is not a snapshot: jobs may move between pages.
        """
        return await views.list_jobs_page(self._database, queue, status, cursor, limit)

    async def dead_jobs(
        self, queue: str, *, after: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Dead-lettered jobs of ``queue`` in id order, starting after the id ``after``."""
        return await views.dead_jobs(self._database, queue, after, limit)

    # ------------------------------------------------------------------ user KV

    async def kv_get(self, key: bytes) -> bytes | None:
        """The value stored under ``key`` in the user namespace, or None."""
        return await self._database.get(keys.user_key(_check_kv_key(key)))

    async def kv_put(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``; return once durable."""
        writes = _check_kv_writes({key: value})
        db = self._database
        for k, v in writes.items():
            await db.put(keys.user_key(k), v, durable=True)

    async def kv_delete(self, key: bytes) -> None:
        """Delete ``key`` (no error if absent); return once durable."""
        await self._database.delete(keys.user_key(_check_kv_key(key)), durable=True)

    async def kv_compare_and_set(
        self, key: bytes, expected: bytes | None, new: bytes | None
    ) -> bool:
        """Atomically replace ``key``'s value if it currently equals ``expected``.

        ``expected=None`` means "must be absent"; ``new=None`` deletes. Returns whether the
        write happened; durable when it did.
        """
        stored_key = keys.user_key(_check_kv_key(key))
        if new is not None:
            _check_kv_writes({key: new})

        async def body(txn: Transaction) -> bool:
            current = await txn.get(stored_key)
            if current != expected:
                return False
            if new is None:
                if current is not None:
                    await txn.delete(stored_key)
            else:
                await txn.put(stored_key, bytes(new))
            return True

        return await run_transaction(self._database, body, durable=True)

    async def kv_scan(
        self, prefix: bytes = b"", *, cursor: bytes | None = None, limit: int = 100
    ) -> KvPage:
        """Entries of the user namespace whose keys start with ``prefix``, in key order."""
        return await views.kv_scan_page(self._database, prefix, cursor, limit)

    # ------------------------------------------------------------------ quarantine

    async def quarantined(
        self, queue: str, *, after: bytes | None = None, limit: int = 100
    ) -> list[QuarantinedRecord]:
        """Records of ``queue`` that could not be decoded and were moved aside.

        A claim, promotion, reap, sweep or fold that meets an undecodable record moves it,
        with its raw bytes and original key, out of the way instead of failing (and logs a
        warning once), so the rest of the queue keeps going; `QueueStats.quarantined` counts
        them. Records come in original-key order; pass the last one's ``key`` as ``after`` to
        continue. Write a repaired record back under its ``key`` to recover a job.
        """
        keys.validate_queue_name(queue)
        if not isinstance(limit, int) or limit < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError("limit must be a non-negative int")
        if limit == 0:
            return []
        return await quarantine.list_page(self._database, queue, after, limit)

    async def _stage_quarantine(
        self, txn: Transaction, key: bytes, raw: bytes, error: DataError, deltas: _Deltas
    ) -> quarantine.Moved:
        """Move an undecodable record aside in ``txn``, taking it out of its counter."""
        moved = await quarantine.stage(txn, key, raw, error, self._clock.now_ms())
        if moved.queue is not None and moved.counter is not None:
            deltas.add(moved.queue, moved.counter, -1)
        return moved

    def _quarantined(self, moved: Sequence[quarantine.Moved]) -> None:
        """After the commit that moved records aside: log them once, count their deltas."""
        quarantine.log_moved(moved)
        self._count_queues(m.queue for m in moved if m.queue is not None and m.counter is not None)

    async def _quarantine_rows(
        self, db: Database, rows: Sequence[tuple[bytes, bytes, DataError]]
    ) -> None:
        """Move undecodable records aside in one transaction (those unchanged since read)."""
        moved: list[quarantine.Moved] = []

        async def body(txn: Transaction) -> None:
            moved.clear()
            deltas = _Deltas()
            for key, raw, error in rows:
                if await txn.get(key) != raw:
                    continue  # rewritten or gone meanwhile
                moved.append(await self._stage_quarantine(txn, key, raw, error, deltas))
            await deltas.stage(txn, self._ids)

        await run_transaction(db, body, durable=False)
        self._quarantined(moved)

    # ------------------------------------------------------------------ background work

    async def reap_now(self) -> int:
        """Requeue (or dead-letter) every claim whose lease has expired; return how many."""
        self._database  # noqa: B018 - raises if the queue is closed or failed
        due = list(self._leases.take_due(self._clock.now_ms()))
        reaped = 0
        for start in range(0, len(due), _SCAN_PAGE):
            page = due[start : start + _SCAN_PAGE]
            try:
                reaped += await self._reap_page(page)
            except (DataError, StorageError) as exc:
                if isinstance(exc, (Fenced, StorageFatal, QueueClosed)):
                    raise
                log.error("could not reap %d expired claims: %s", len(page), exc)
                for queue, job_id, token in page:
                    self._leases.release_reaping(queue, job_id, token)
        return reaped

    async def _reap_page(self, page: Sequence[tuple[str, str, int]]) -> int:
        def still_held(queue: str, job_id: str, token: int) -> Callable[[], bool]:
            def check() -> bool:
                entry = self._leases.lookup(queue, job_id)
                return entry is not None and entry.token == token

            return check

        moved = await self._end_claims(
            [
                (keys.claimed_key(queue, job_id), still_held(queue, job_id, token))
                for queue, job_id, token in page
            ],
            reason="lease expired",
        )
        for queue, job_id, token in page:
            entry = self._leases.lookup(queue, job_id)
            if entry is not None and entry.token == token:
                entry.cancel.fire()  # tell a still-running handler its delivery is over
            self._leases.remove(queue, job_id, token)
        return sum(moved)

    async def promote_scheduled_now(self) -> int:
        """Make every scheduled job whose time has come pending; return how many.

        Cheap when idle: the scheduled space is read only once its earliest due time has come,
        and from that time on, not through the tombstones earlier promotions left (see
        ``docs/design/queue-internals.md``). Concurrent calls run one after the other, so when
        one returns every job due at its start has been promoted.
        """
        db = self._database
        async with self._promote_lock:
            now = self._clock.now_ms()
            mark = self._promote_mark
            start = mark.begin(now)
            if start is None:
                return 0
            try:
                return await self._promote_due(db, start, now)
            except BaseException:
                mark.abort(start)
                raise

    async def _promote_due(self, db: Database, start: int, now: int) -> int:
        """Promote the scheduled keys from ``start`` to ``now`` (ms); re-mark the next one."""
        prefix = keys.space_prefix(keys.Space.SCHEDULED)
        first = prefix + start.to_bytes(8, "big")
        end = prefix + (now + 1).to_bytes(8, "big")
        promoted = 0
        inclusive = True
        while True:
            rows = await db.scan(
                prefix, start=first, start_inclusive=inclusive, end=end, limit=_SCAN_PAGE
            )
            for key, _ in rows:
                if await self._promote_one(db, key):
                    promoted += 1
            if len(rows) < _SCAN_PAGE:
                break
            first, inclusive = rows[-1][0], False
        # Keys due later were not looked at: mark the earliest one (one key read).
        later = await db.scan(prefix, start=end, limit=1)
        if later:
            run_at = keys.key_time(later[0][0])
            self._promote_mark.note(run_at, run_at)
        return promoted

    def _hold_scheduled(self, prepared: Iterable[_Prepared]) -> list[int]:
        """Hold the promotion mark at the due times of these enqueues until `_release`."""
        mark = self._promote_mark
        return [
            mark.hold(item.record.run_at, item.record.run_at)
            for item in prepared
            if item.record.run_at is not None
        ]

    def _release(self, mark: Mark, holds: Iterable[int]) -> None:
        """Release the holds of a write whose commit attempt is over (whatever its outcome)."""
        for handle in holds:
            mark.release(handle)

    async def _promote_one(self, db: Database, key: bytes) -> bool:
        result: list[tuple[str, bytes]] = []
        # Not held: the scheduled record was durable, so the job survives a crash either way.
        inserts = self._inserts(hold=False)
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
                deltas = _Deltas()
                bad.append(await self._stage_quarantine(txn, key, raw, exc, deltas))
                await deltas.stage(txn, self._ids)
                return
            pending_key = keys.pending_key(job.queue, job.priority, job.id)
            await txn.delete(key)
            await txn.put(
                pending_key, encode_job(job.replace(status=JobStatus.PENDING, run_at=None))
            )
            await txn.put(keys.index_key(job.id), pending_key)
            deltas = _Deltas()
            deltas.move(job.queue, "scheduled", "pending")
            await deltas.stage(txn, self._ids)
            inserts.add(job.queue, pending_key)
            result.append((job.queue, pending_key))

        try:
            await run_transaction(db, body, durable=False)
        finally:
            inserts.finish()  # also when the outcome is unknown
        self._quarantined(bad)
        if not result:
            return False
        self._count_deltas(result[0][0])
        return True

    async def sweep_now(self) -> int:
        """Delete done and dead records whose retention has passed; return how many.

        Each space is read only once its earliest retained record can have expired (known
        from the last pass and from the acks and dead-letters made since), so a large inbox is
        not reread on every reaper tick. Done records are keyed by completion time: a pass
        starts at the oldest record it kept last time (not at the tombstones of the ones it
        deleted) and stops where even the shortest ``keep_done`` has not run out. Dead records
        are keyed by queue and id, so a dead pass reads the whole dead space.
        """
        db = self._database
        async with self._sweep_lock:
            now = self._clock.now_ms()
            configs = [self._default_config, *self._configs.values()]
            swept = 0
            keeps = [ms for c in configs if (ms := retention_ms(c.keep_done)) is not None]
            if keeps:
                swept += await self._sweep_space(db, now, JobStatus.DONE, min(keeps))
            if any(retention_ms(c.dead_retention) is not None for c in configs):
                swept += await self._sweep_space(db, now, JobStatus.DEAD, None)
            return swept

    async def _sweep_space(
        self, db: Database, now: int, status: JobStatus, shortest: int | None
    ) -> int:
        """One retention pass over the done or dead space, if its mark says one is due."""
        mark = self._done_mark if status is JobStatus.DONE else self._dead_mark
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

    def _note_dead_letter(self, queue: str) -> None:
        """Note a committed dead-letter in ``queue`` (its ``failed_at`` is at most now)."""
        retention = retention_ms(self.config(queue).dead_retention)
        if retention is not None:
            self._dead_mark.note(0, self._clock.now_ms() + retention)

    def _hold_done(self, queue: str, completed_at: int) -> int:
        """Hold the done mark at a done record being written, until `_release`."""
        retention = retention_ms(self.config(queue).keep_done)
        due = None if retention is None else completed_at + retention
        return self._done_mark.hold(completed_at, due)

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
        mark = self._done_mark if status is JobStatus.DONE else self._dead_mark
        swept = 0
        next_due: int | None = None
        start, inclusive = first, True
        while True:
            rows = await db.scan(
                prefix, start=start, start_inclusive=inclusive, end=end, limit=_SCAN_PAGE
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
                config = self.config(job.queue)
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
                await self._quarantine_rows(db, undecodable)
            if len(rows) < _SCAN_PAGE:
                return swept, next_due
            start, inclusive = rows[-1][0], False

    async def _delete_records(
        self, db: Database, records: Sequence[tuple[bytes, JobRecord]], status: JobStatus
    ) -> int:
        """Delete expired records (and their index entries) in one transaction; return how many.

        A record already gone (requeued, or deleted by another sweep) is skipped.
        """
        deleted: list[str] = []

        async def body(txn: Transaction) -> None:
            deleted.clear()
            deltas = _Deltas()
            for key, job in records:
                if await txn.get(key) is None:
                    continue
                found = await _locate(txn, job.id)
                await txn.delete(key)
                if found is not None and found[0] == key:
                    await txn.delete(keys.index_key(job.id))
                if status is JobStatus.DEAD:
                    deltas.add(job.queue, "dead", -1)
                deleted.append(job.queue)
            await deltas.stage(txn, self._ids)

        await run_transaction(db, body, durable=False)
        if status is JobStatus.DEAD:
            self._count_queues(deleted)
        return len(deleted)

    async def fold_stats_now(self) -> None:
        """Fold accumulated counter deltas into each queue's totals (keeps `stats` cheap)."""
        db = self._database
        prefix = keys.space_prefix(keys.Space.STATS_DELTA)
        start: bytes | None = None
        while True:
            rows = await db.scan(prefix, start=start, limit=1)
            if not rows:
                return
            queue = keys.parse_queue_key(rows[0][0])
            self._unfolded.pop(queue, None)
            await self._fold_queue(db, queue)
            start = _prefix_end(prefix + keys.encode_queue(queue))
            if start is None:
                return

    async def _fold_queue(self, db: Database, queue: str) -> None:
        base_key = keys.stats_key(queue)
        prefix = keys.stats_delta_prefix(queue)

        bad: list[quarantine.Moved] = []

        async def body(txn: Transaction) -> int:
            bad.clear()
            totals = _decode_counts(await txn.get(base_key))
            rows = await txn.scan(prefix, limit=_FOLD_BATCH)
            if not rows:
                return 0
            now = self._clock.now_ms()
            for key, value in rows:
                try:
                    delta = _decode_delta(value)
                except DataError as exc:  # set aside; the other deltas still fold
                    bad.append(await quarantine.stage(txn, key, value, exc, now))
                    continue
                for i, amount in enumerate(delta):
                    totals[i] += amount
                await txn.delete(key)
            await txn.put(base_key, encode_map(dict(zip(_STATS_FIELDS, totals, strict=True))))
            return len(rows)

        while True:
            folded = await run_transaction(db, body, durable=False)
            self._quarantined(bad)
            if folded < _FOLD_BATCH:
                return

    async def _every(
        self, interval: float, work: Callable[[], Awaitable[object]], what: str
    ) -> None:
        """Run ``work`` every ``interval`` seconds until the queue stops.

        Only `Fenced` and `StorageFatal` (which stop the queue) and `QueueClosed` end it; any
        other error (a transient outage, a bad value) is logged and retried after a backoff.
        """
        streak = self._health.streak(what)
        try:
            delay = interval
            while self._failure is None:
                await trio.sleep(delay)
                delay = interval
                try:
                    await work()
                except (Fenced, StorageFatal) as exc:
                    self._fail(exc)
                    return
                except QueueClosed:
                    return
                except Exception as exc:  # one bad tick must not end the queue
                    delay = max(interval, streak.failed(exc))
                else:
                    streak.succeeded()
        finally:
            self._health.release(streak)

    async def _reaper(self) -> None:
        async def tick() -> None:
            await self.reap_now()
            await self.sweep_now()

        await self._every(self._reaper_interval, tick, "reaper")

    async def _folder(self) -> None:
        streak = self._health.streak("stats fold")
        try:
            backoff = 0.0
            while self._failure is None:
                if backoff:
                    await trio.sleep(backoff)
                with trio.move_on_after(max(self._scheduler_interval, 1.0)):
                    await self._fold_wanted.wait()
                self._fold_wanted = trio.Event()
                backoff = 0.0
                try:
                    await self.fold_stats_now()
                except (Fenced, StorageFatal) as exc:
                    self._fail(exc)
                    return
                except QueueClosed:
                    return
                except Exception as exc:  # one bad fold must not end the queue
                    backoff = streak.failed(exc)
                else:
                    streak.succeeded()
        finally:
            self._health.release(streak)

    async def _background(
        self,
        maintenance: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)  # only watches for fencing; changes nothing
            if maintenance:
                nursery.start_soon(self._reaper)
                nursery.start_soon(
                    self._every, self._scheduler_interval, self.promote_scheduled_now, "scheduler"
                )
                nursery.start_soon(self._folder)
            task_status.started()


def _always() -> bool:
    return True


def _check_kv_writes(writes: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    checked: dict[bytes, bytes] = {}
    for key, value in writes.items():
        if not isinstance(value, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError(f"KV values must be bytes, not {type(value).__name__}")
        if len(value) > MAX_KV_VALUE_SIZE:
            raise KvValueTooLarge(len(value), MAX_KV_VALUE_SIZE)
        checked[_check_kv_key(key)] = bytes(value)
    return checked


def _check_kv_expect(expect: Mapping[bytes, bytes | None]) -> dict[bytes, bytes | None]:
    checked: dict[bytes, bytes | None] = {}
    for key, value in expect.items():
        if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise UsageError(
                f"expected KV values must be bytes or None, not {type(value).__name__}"
            )
        checked[_check_kv_key(key)] = None if value is None else bytes(value)
    return checked


async def _check_expectations(txn: Transaction, expect: Mapping[bytes, bytes | None]) -> None:
    """Raise `KvConflict` unless every expected user KV entry holds; conflict-protect them."""
    if not expect:
        return
    stored = [keys.user_key(key) for key in expect]
    await txn.mark_read(stored)
    for key, full in zip(expect, stored, strict=True):
        if await txn.get(full) != expect[key]:
            raise KvConflict(key)


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
    name: str = "taquba",
    *,
    config: QueueConfig | None = None,
    queues: Mapping[str, QueueConfig] | None = None,
    clock: Clock | None = None,
    flush_interval: float | None = None,
    reaper_interval: float = 5.0,
    scheduler_interval: float = 1.0,
    commit_deadline: float | None = None,
    maintenance: bool = True,
) -> AsyncGenerator[Queue]:
    """Open (creating if needed) the queue database ``name`` in ``store``.

    On open, claims left behind by a process that died are requeued (or dead-lettered when
    out of attempts), and the claim-scan state saved by the last clean close is restored.
    While open, background tasks reap expired leases, promote due scheduled jobs, sweep
    retained done/dead records and fold counters (all of it, and the claim recovery, only
    with ``maintenance``, the default). On exit the claim-scan state is saved and
    the database is shut down.

    Args:
        store: a `Store`, or a URL/path for `Store.from_url`.
        name: the database name inside the store.
        config: the configuration of queues not listed in ``queues``.
        queues: per-queue configuration, by queue name (whole objects, not merged).
        clock: the time source (default `SystemClock`); layers share it via `Queue.clock`.
        flush_interval: SlateDB's WAL flush interval in seconds (default 0.1, at most a day).
            Every durable operation waits for a flush, so this is the floor of their latency.
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
            default) catches up on all of it. Fencing is still watched.

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
    flush_interval = check_optional_seconds("flush_interval", flush_interval, positive=True)
    if flush_interval is not None and flush_interval > _MAX_FLUSH_INTERVAL:
        raise InvalidArgument(
            "flush_interval", flush_interval, f"must be at most {_MAX_FLUSH_INTERVAL:g} seconds"
        )
    if commit_deadline is not None:
        commit_deadline = check_commit_deadline(commit_deadline)
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
