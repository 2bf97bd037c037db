"""New jobs: resolving an `EnqueueRequest` to a record, staging it, and group-committed enqueues.

`prepare` checks a request and resolves it to its record and key (pending, or scheduled when
it has a due time) before any transaction; `stage_enqueue` writes it (record, index, dedup
entry, counter), and is shared with the follow-up enqueues of settlements (`_settle.py`).
`Enqueuer` runs `Queue.enqueue` and `Queue.enqueue_batch`: concurrent calls are committed
together (`GroupCommit`), each keeping its own outcome.

Rules the writes keep:

- A dedup key taken by a pending or scheduled job turns the enqueue into a no-op that
  returns that job's id (``created=False``); an explicit job id already indexed is a
  `DuplicateJobId`. Both are read inside the transaction, so a conflict reruns the check.
- A new pending key is held from claims until the enqueue is durable (`Inserts`), and a
  new scheduled key holds the promotion mark from before the transaction until its commit
  attempt is over (``docs/design/queue-internals.md``, "Low-water marks").
- A payload above its queue's offload threshold is written as an object before the
  transaction, and the objects no committed record references are deleted after it
  (`_payloads.py`); `prepare` itself does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _keys as keys  # pyright: ignore[reportPrivateUsage]
from ._batch import BatchRequest, DropFromBatch, GroupCommit
from ._context import Deltas, Inserts, Prepared, QueueContext
from ._errors import DuplicateJobId, TaqubaError, UsageError
from ._ids import validate_job_id
from ._interrupts import protect
from ._kv import check_expectations, check_kv_expect, check_kv_writes
from ._records import MAX_ATTEMPTS, MAX_PRIORITY, JobRecord, JobStatus, encode_job
from ._types import EnqueueRequest, EnqueueResult
from ._validate import (
    check_int,
    check_optional_seconds,
    check_type,
    clamp_time,
    datetime_ms,
    duration_ms,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._adapter import Transaction

__all__ = ["MAX_BATCH", "Enqueuer", "prepare", "stage_enqueue"]

MAX_BATCH = 256
"""The most calls one group commit (of enqueues, or of acks) takes."""


def run_at_ms(run_at: object, delay: object, now: int) -> int | None:
    """The due time of an enqueue (ms), or None for a job claimable at once."""
    if run_at is not None and delay is not None:
        raise UsageError("pass either run_at or delay, not both")
    if run_at is not None:
        at = datetime_ms("run_at", run_at)
        return at if at > now else None
    seconds = check_optional_seconds("delay", delay)
    if not seconds:
        return None
    return clamp_time(now + duration_ms(seconds))


def prepare(context: QueueContext, request: EnqueueRequest, now: int) -> Prepared:
    """Check ``request`` and resolve it to its record and key (no I/O)."""
    check_type("requests", request, EnqueueRequest, "EnqueueRequest objects")
    queue = keys.validate_queue_name(request.queue_name)
    payload = request.payload
    if not isinstance(payload, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise UsageError(f"payload must be bytes, not {type(payload).__name__}")
    config = context.config(queue)
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
    job_id = validate_job_id(request.job_id) if explicit else context.ids.next_id()
    if context.observers.active:
        context.observers.headers(queue, job_id, headers)
    run_at = run_at_ms(request.run_at, request.delay, now)
    record = JobRecord(
        id=job_id,
        queue_name=queue,
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
    return Prepared(record, key, explicit)


async def stage_enqueue(
    txn: Transaction, prepared: Prepared, deltas: Deltas, inserts: Inserts
) -> EnqueueResult:
    """Write one prepared job in ``txn`` (or find the job holding its dedup key)."""
    job = prepared.record
    if prepared.explicit_id and await txn.get(keys.index_key(job.id)) is not None:
        raise DuplicateJobId(job.id)
    if job.dedup_key is not None:
        dedup = keys.dedup_key(job.queue_name, job.dedup_key)
        existing = await txn.get(dedup)
        if existing is not None:
            return EnqueueResult(existing.decode("ascii"), created=False)
        await txn.put(dedup, job.id.encode("ascii"))
    await txn.put(prepared.key, encode_job(job))
    await txn.put(keys.index_key(job.id), prepared.key)
    if job.run_at is None:
        inserts.add(job.queue_name, prepared.key)
    deltas.add(job.queue_name, "scheduled" if job.run_at is not None else "pending")
    return EnqueueResult(job.id, created=True)


@dataclass(slots=True, eq=False)
class _EnqueueRequest(BatchRequest):
    """One `Queue.enqueue` or `Queue.enqueue_batch` call waiting to be committed in a batch."""

    prepared: list[Prepared]
    writes: dict[bytes, bytes]
    expect: dict[bytes, bytes | None]
    writes_need_creation: bool  # `enqueue`: KV writes only if the job was created
    inserts: Inserts  # hidden from claims until durable
    results: list[EnqueueResult] = field(default_factory=list[EnqueueResult])


class Enqueuer:
    """`Queue.enqueue` and `Queue.enqueue_batch`, committed in groups."""

    def __init__(self, context: QueueContext) -> None:
        self._context = context
        self._enqueues = GroupCommit(
            lambda: context.database,
            self._stage_enqueues,
            self._enqueues_committed,
            max_batch=MAX_BATCH,
            cancellable=True,
        )

    async def enqueue(
        self,
        request: EnqueueRequest,
        kv_writes: Mapping[bytes, bytes] | None,
        kv_expect: Mapping[bytes, bytes | None] | None,
    ) -> EnqueueResult:
        """`Queue.enqueue`, its arguments gathered in ``request``."""
        context = self._context
        batch = _EnqueueRequest(
            prepared=[prepare(context, request, context.clock.now_ms())],
            writes=check_kv_writes(kv_writes or {}),
            expect=check_kv_expect(kv_expect or {}),
            writes_need_creation=True,
            inserts=context.inserts(hold=True),
        )
        await self._submit(batch)
        return batch.results[0]

    async def enqueue_batch(
        self,
        requests: Sequence[EnqueueRequest],
        kv_writes: Mapping[bytes, bytes] | None,
        kv_expect: Mapping[bytes, bytes | None] | None,
    ) -> list[EnqueueResult]:
        """`Queue.enqueue_batch`."""
        context = self._context
        now = context.clock.now_ms()
        prepared = [prepare(context, request, now) for request in requests]
        writes = check_kv_writes(kv_writes or {})
        expect = check_kv_expect(kv_expect or {})
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
            inserts=context.inserts(hold=True),
        )
        await self._submit(batch)
        return batch.results

    async def _submit(self, batch: _EnqueueRequest) -> None:
        """Offload ``batch``'s large payloads, commit it, then drop the objects left unused."""
        context = self._context
        await context.offload(batch.prepared)  # before the transaction; nothing left if it fails
        holds = context.hold_scheduled(batch.prepared)
        error: BaseException | None = None
        try:
            await self._enqueues.submit(batch)
        except BaseException as exc:
            error = exc
            raise
        finally:
            context.release(context.promote_mark, holds)
            batch.inserts.finish()  # claimable now: durable, or of unknown outcome
            # A dedup hit, or a failed write, leaves objects no record references.
            await context.settle_enqueues(batch.prepared, batch.results, error)

    async def _stage_enqueues(
        self, txn: Transaction, batch: list[_EnqueueRequest]
    ) -> list[tuple[_EnqueueRequest, TaqubaError]]:
        """Stage concurrent enqueue calls in one transaction (rerun from scratch on conflict).

        Requests are staged in arrival order, so each sees the writes of those before it (a
        dedup key or job id taken earlier in the batch counts as taken). A request that fails
        (`KvConflict`, `DuplicateJobId`) is dropped and the batch restaged without it.
        """
        deltas = Deltas()
        for request in batch:
            try:
                await check_expectations(txn, request.expect)
                request.results = [
                    await stage_enqueue(txn, item, deltas, request.inserts)
                    for item in request.prepared
                ]
            except TaqubaError as exc:
                raise DropFromBatch(request, exc) from exc
            if not request.writes_need_creation or any(r.created for r in request.results):
                for key, value in request.writes.items():
                    await txn.put(keys.user_key(key), value)
        await deltas.stage(txn, self._context.delta_seqs)
        return []

    def _enqueues_committed(self, committed: list[_EnqueueRequest]) -> None:
        # The cursor learns of the new keys from each caller's `Inserts.finish`.
        context = self._context
        context.count_queues(item.record.queue_name for r in committed for item in r.prepared)
        if context.observers.active:
            for request in committed:
                context.observe_enqueued(request.prepared, request.results)


protect(prepare, stage_enqueue, Enqueuer)
