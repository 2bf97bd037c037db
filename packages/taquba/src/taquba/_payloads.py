"""Payload offload: large payloads as objects of their own, next to the queue database.

Theory of operation.

- A payload longer than its queue's ``payload_offload_threshold`` is written, before the
  enqueue's transaction, as the blob ``db/<name>/payloads/<ref>`` of the store (``<name>``
  encoded as in `Store.db_path`), where ``<ref>`` is a fresh ULID per enqueue attempt and the
  write is create-only: a rejected enqueue (a taken job id, a dedup hit) can never overwrite
  the object of a live job. The record is stored with an empty payload and the ref
  (`JobRecord.payload_ref`). Enqueues, batches and the follow-up enqueues of settlements
  (`Effects`) all offload.
- Every record write starts from a *stored* record (the transaction reads it), so no
  transition rewrites, re-uploads or inlines the payload. Claims and reads return records
  with the payload *materialized*: read from the object after the transaction (never while a
  transaction or the claim lock is held).
- The object is deleted, best-effort, after the commit that removes the job's last record
  (an ack without ``keep_done``, a cancel of a pending or scheduled job, the done and dead
  sweeps, `Queue.purge`), and after an enqueue that did not create its job (a dedup hit, a
  follow-up of a nack that was retried). A dead-lettered job keeps its object:
  `Queue.requeue_dead_job` revives it. A crash between the commit and the delete leaves an
  orphaned object, never a record whose object is gone.
- Orphans are collected by `Queue.collect_payloads_now` (`taquba._payload_gc`, in the
  background hourly): an object older than a grace period (judged from the ULID time of
  its ref) that no job record of one database snapshot references, and that no enqueue in
  flight wrote. Each ref is *in flight* from before its object is written until its
  enqueue knows its outcome (`Payloads.in_flight`), so the collector never takes the
  object of an enqueue whose transaction has not committed yet.
- A write that fails leaves nothing: a failed object write fails the enqueue before its
  transaction (a batch deletes the objects it wrote before); a transaction that fails with a
  known outcome (a conflict, `DuplicateJobId`, `ClaimLost`, cancellation before the request
  was staged) deletes its objects. A `StorageError` leaves the outcome unknown, so the
  enqueuer reads back which of its jobs were committed and deletes only the other objects
  (when even the read fails, they stay as orphans, for the collector).
- A missing object is `PayloadMissing`. `Queue.get_job` and `Queue.list_jobs` first read the
  job's record again: a job removed meanwhile reads as absent (omitted from a page). A claim
  whose object is missing dead-letters that job at once (its last error names the object),
  and the claim is not delivered. A *terminal* job (done or dead: `SETTLED`) whose object is
  missing reads with an empty payload and its `payload_ref` still set, since nothing will run
  it again: the dead-letter inbox, kept done jobs, `get_job`, `Queue.wait_for_completion` and
  the layers that read settled jobs keep working; a requeue of a dead one is dead-lettered
  again at its claim. `Queue.wait_for_completion` takes `PayloadMissing` for what it is, a live
  job, and keeps waiting until the claim sets the job aside.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import trio

from ._errors import PayloadMissing, StorageError, TaqubaError
from ._interrupts import protect
from ._records import JobRecord, JobStatus, decode_job
from ._types import JobPage

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from ._context import Prepared
    from ._ids import IdGenerator
    from ._store import Store
    from ._types import EnqueueResult

__all__ = ["PAYLOAD_DIR", "SETTLED", "Payloads", "payload_dir"]

log = logging.getLogger("taquba")

PAYLOAD_DIR: Final = "payloads"
"""The directory of a database's offloaded payloads, under ``db/<name>/`` of the blob space."""

READ_CONCURRENCY: Final = 16
"""Objects a listing page reads at once."""

CLEANUP_SECONDS: Final = 30.0
"""How long a best-effort delete may take when its caller is cancelled."""

SETTLED: Final = frozenset({JobStatus.DONE, JobStatus.DEAD})
"""The terminal statuses: nothing runs such a job again, so a missing object is no error."""


def payload_dir(store: Store, name: str) -> str:
    """The blob directory of database ``name``'s offloaded payloads."""
    segment = store.db_path(name).rsplit("/", 1)[-1]
    return f"db/{segment}/{PAYLOAD_DIR}"


def offloaded(record: JobRecord, threshold: int | None) -> bool:
    """Whether ``record``'s payload goes to an object of its own (pure)."""
    return threshold is not None and len(record.payload) > threshold


class Payloads:
    """The offloaded payloads of one queue database (see the module docstring)."""

    __slots__ = ("_dir", "_in_flight", "_store")

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self._dir = payload_dir(store, name)
        self._in_flight: set[str] = set()

    def in_flight(self) -> frozenset[str]:
        """The refs of the objects whose enqueue is not over (written, or being written).

        A ref joins before its object is written and leaves once its enqueue knows its
        outcome (`settle_enqueues`), so a copy taken before a snapshot of the database holds
        every ref whose record that snapshot cannot show yet (`taquba._payload_gc`).
        """
        return frozenset(self._in_flight)

    @property
    def directory(self) -> str:
        """The blob directory the objects live in."""
        return self._dir

    def path(self, ref: str) -> str:
        """The blob path of the object ``ref``."""
        return f"{self._dir}/{ref}"

    # ------------------------------------------------------------------ enqueue side

    async def offload(
        self,
        prepared: Sequence[Prepared],
        thresholds: Callable[[str], int | None],
        ids: IdGenerator,
    ) -> list[str]:
        """Write the objects of the oversized payloads of ``prepared``, one after the other.

        Each such item's record becomes its stored form (empty payload, ``payload_ref``) and
        keeps the payload in `Prepared.payload` (what observers see). Returns the refs written.
        If a write fails (or the caller is cancelled), the objects written before are deleted
        and the error propagates: nothing of the enqueue is left.
        """
        written: list[str] = []
        tried: list[str] = []
        try:
            for item in prepared:
                record = item.record
                if not offloaded(record, thresholds(record.queue_name)):
                    continue
                while True:
                    ref = ids.next_id()
                    # In flight before it exists: the collector never takes it (`in_flight`).
                    self._in_flight.add(ref)
                    tried.append(ref)
                    # Create-only under a fresh name: never another job's object.
                    if await self._store.put_blob(self.path(ref), record.payload, create_only=True):
                        break
                written.append(ref)
                item.payload = record.payload
                item.record = record.replace(payload=b"", payload_ref=ref)
        except BaseException:
            try:
                await self.delete(written)
            finally:
                self._in_flight.difference_update(tried)
            raise
        self._in_flight.difference_update(set(tried) - set(written))
        return written

    async def settle_enqueues(
        self,
        prepared: Sequence[Prepared],
        results: Sequence[EnqueueResult] | None,
        error: BaseException | None,
        committed: Callable[[Sequence[str]], Awaitable[set[str]]],
    ) -> None:
        """Delete the objects ``prepared`` wrote that no committed record references.

        ``results`` (parallel to ``prepared``; shorter when the enqueues were not staged) of
        a successful write say which jobs were created; after ``error`` nothing was, unless
        it is a `StorageError` (an unknown outcome): then ``committed`` reads back, by job id,
        which records hold their ref (a read that fails keeps every object). The refs are no
        longer in flight once it returns, whatever happened.
        """
        mine = [item for item in prepared if item.record.payload_ref is not None]
        if not mine:
            return
        try:
            await self._settle_enqueues(mine, prepared, results, error, committed)
        finally:
            self._in_flight.difference_update(
                ref for item in mine if (ref := item.record.payload_ref) is not None
            )

    async def _settle_enqueues(
        self,
        mine: Sequence[Prepared],
        prepared: Sequence[Prepared],
        results: Sequence[EnqueueResult] | None,
        error: BaseException | None,
        committed: Callable[[Sequence[str]], Awaitable[set[str]]],
    ) -> None:
        keep: set[str] = set()
        if error is None:
            created = results or []
            keep = {
                ref
                for item, result in zip(prepared, created, strict=False)
                if result.created and (ref := item.record.payload_ref) is not None
            }
        elif isinstance(error, StorageError) or not isinstance(
            error, (TaqubaError, trio.Cancelled)
        ):
            try:
                with trio.move_on_after(CLEANUP_SECONDS, shield=True) as scope:
                    keep = await committed([item.record.id for item in mine])
            except Exception as exc:  # best effort: keep them all
                log.warning("could not check which offloaded payloads were committed: %s", exc)
                return
            if scope.cancelled_caught:
                return
        await self.delete(
            ref for item in mine if (ref := item.record.payload_ref) is not None and ref not in keep
        )

    # ------------------------------------------------------------------ read side

    async def materialize(self, job: JobRecord, *, confirmed: bool = True) -> JobRecord:
        """``job`` with its payload read from its object (``job`` itself if not offloaded).

        Raises:
            PayloadMissing: the object does not exist (``transient`` unless ``confirmed``).
        """
        ref = job.payload_ref
        if ref is None:
            return job
        data = await self._store.get_blob(self.path(ref))
        if data is None:
            raise PayloadMissing(job.id, ref, transient=not confirmed)
        return job.replace(payload=data)

    async def read_job(
        self,
        locate: Callable[[], Awaitable[tuple[bytes, bytes] | None]],
        *,
        confirmed: bool = True,
        attempts: int = 10,
    ) -> JobRecord | None:
        """A job's current record, materialized; None if it has none (``locate`` reads it).

        A missing object is re-checked: if the job's record is gone meanwhile, or now holds
        another ref (the id was reused), the job reads as absent or is read again.
        """
        for _ in range(attempts):
            found = await locate()
            if found is None:
                return None
            job = decode_job(found[1])
            try:
                return await self.materialize(job, confirmed=confirmed)
            except PayloadMissing:
                again = await locate()
                if again is None:
                    return None
                if decode_job(again[1]).payload_ref == job.payload_ref:
                    if job.status in SETTLED:
                        return job  # readable, with an empty payload (the module docstring)
                    raise
        return None

    async def read_page(
        self,
        page: JobPage,
        locate: Callable[[str], Awaitable[tuple[bytes, bytes] | None]],
        *,
        confirmed: bool = True,
    ) -> JobPage:
        """``page`` with its payloads materialized; rows of jobs removed meanwhile left out.

        Raises:
            PayloadMissing: a job's record still references an object that is missing.
        """
        jobs = await self.read_jobs(page.jobs, locate, confirmed=confirmed)
        return JobPage(jobs, page.next_cursor)

    async def read_jobs(
        self,
        jobs: Sequence[JobRecord],
        locate: Callable[[str], Awaitable[tuple[bytes, bytes] | None]],
        *,
        confirmed: bool = True,
    ) -> list[JobRecord]:
        """`read_page` for a list of records (`Queue.dead_jobs`)."""
        if all(job.payload_ref is None for job in jobs):
            return list(jobs)
        out: list[JobRecord | None] = list(jobs)
        errors: list[TaqubaError] = []
        limiter = trio.CapacityLimiter(READ_CONCURRENCY)

        async def read(index: int, job: JobRecord) -> None:
            # Errors are collected, not raised: the page fails with one of ours, not a group.
            async with limiter:
                try:
                    try:
                        out[index] = await self.materialize(job, confirmed=confirmed)
                    except PayloadMissing as exc:
                        again = await locate(job.id)
                        if again is None or decode_job(again[1]).payload_ref != job.payload_ref:
                            out[index] = None  # removed since the scan: not part of the page
                        elif job.status not in SETTLED:
                            errors.append(exc)
                        # else: a settled job whose object is gone stays, with an empty payload
                except TaqubaError as exc:
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            for index, job in enumerate(jobs):
                if job.payload_ref is not None:
                    nursery.start_soon(read, index, job)
        if errors:
            raise errors[0]
        return [job for job in out if job is not None]

    # ------------------------------------------------------------------ deletion

    async def delete(self, refs: Iterable[str]) -> None:
        """Delete the objects ``refs``, best-effort: failures are logged, never raised.

        Runs shielded (bounded by `CLEANUP_SECONDS`): it follows a commit that already
        happened, so a cancelled caller must not lose the delete nor see an error.
        """
        refs = list(refs)
        if not refs:
            return
        with trio.move_on_after(CLEANUP_SECONDS, shield=True):
            for ref in refs:
                try:
                    await self._store.delete_blob(self.path(ref))
                except Exception as exc:  # an orphan costs space only
                    log.warning("could not delete offloaded payload %s: %s", ref, exc)

    async def delete_jobs(self, jobs: Iterable[JobRecord]) -> None:
        """`delete` the objects of ``jobs`` (those offloaded) after their records went."""
        await self.delete(job.payload_ref for job in jobs if job.payload_ref is not None)


protect(Payloads)
