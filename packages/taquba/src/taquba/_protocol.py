"""`QueueLike` and `BlobStore`: what `Worker`, `LeaseHandle` and the layers need of a queue.

`Queue` (the owner of a store, in this process) implements both protocols; so can a queue
reached some other way, such as the HTTP client of ``taquba-client`` talking to the owner
process. Code typed against `QueueLike` runs unchanged over either. The members and their
signatures are exactly `Queue`'s; each docstring here states the contract an implementation
keeps, and `Queue`'s method of the same name documents it in full.

An implementation outside the core builds `Claim` objects itself, ``Claim(job, token=...,
owner=self, cancel=CancelToken())``, reads ``claim.token`` back to settle them, and fires the
claim's `CancelToken` when it learns the job's cancellation was requested (or its lease
lost). Errors are taquba's: an unreachable backend raises `StorageUnavailable` (transient, so
`Worker` retries its claims with backoff), a settlement that lost its claim raises
`ClaimLost`, and so on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from ._clock import Clock
    from ._config import QueueConfig
    from ._errors import TaqubaError
    from ._records import JobRecord, QueueStats
    from ._types import (
        CancelOutcome,
        Claim,
        Effects,
        EnqueueRequest,
        EnqueueResult,
        KvPage,
        NackResult,
    )

__all__ = ["BlobStore", "QueueLike"]


@runtime_checkable
class BlobStore(Protocol):
    """The blob half of a `Store`: what the layers keep next to the queue (results, memos).

    Paths are ``/``-separated and relative to the store's blob namespace. Every call is
    durable when it returns; transient failures raise `StorageUnavailable`.
    """

    async def put_blob(self, path: str, data: bytes, *, create_only: bool = False) -> bool:
        """Write ``data`` at ``path``; with ``create_only``, only if no blob is there.

        Returns whether the blob was written (always True without ``create_only``).
        """
        ...

    async def get_blob(self, path: str) -> bytes | None:
        """The content of the blob at ``path``, or None if there is none."""
        ...

    async def delete_blob(self, path: str) -> bool:
        """Delete the blob at ``path``; return whether there was one."""
        ...

    async def list_blobs(
        self, directory: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """The blob names under ``directory`` (recursively, relative to it), sorted.

        Only names sorting after ``start_after``, at most ``limit`` of them.
        """
        ...


@runtime_checkable
class QueueLike(Protocol):
    """The part of `Queue`'s API that `Worker`, `LeaseHandle` and the layers use.

    `Queue` implements it. Layers (``taquba-jobs``, ``taquba-workflow``, ...) accept any
    `QueueLike`, so their workers, job submission and result waits also run over a queue
    whose owner is another process (``taquba-client``'s remote queue). The semantics are
    `Queue`'s, method by method; see there for the full documentation.

    The protocol is runtime-checkable: ``isinstance(x, QueueLike)`` checks that every member
    is present (not their signatures).
    """

    @property
    def name(self) -> str:
        """The database name inside the store."""
        ...

    @property
    def clock(self) -> Clock:
        """The clock every timestamp of this queue is read from; layers share it."""
        ...

    @property
    def store(self) -> BlobStore:
        """Where the layers keep their blobs (results, memos): the queue's store or a proxy."""
        ...

    @property
    def failure(self) -> TaqubaError | None:
        """Why the queue stopped (`Fenced`, `QueueClosed`, ...), or None while it runs."""
        ...

    def config(self, queue_name: str) -> QueueConfig:
        """The configuration that applies to ``queue_name``."""
        ...

    def next_job_id(self) -> str:
        """A fresh monotonic ULID, for callers that must know a job's id before enqueueing it."""
        ...

    async def wait_stopped(self) -> None:
        """Wait until the queue is closed or fails (see `failure`)."""
        ...

    # ---------------------------------------------------------------- producers

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
        """Add a job to ``queue_name``; return once it is durable (see `Queue.enqueue`)."""
        ...

    async def enqueue_batch(
        self,
        requests: Sequence[EnqueueRequest],
        *,
        kv_writes: Mapping[bytes, bytes] | None = None,
        kv_expect: Mapping[bytes, bytes | None] | None = None,
    ) -> list[EnqueueResult]:
        """Enqueue several jobs in one transaction, all or none (see `Queue.enqueue_batch`)."""
        ...

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job's current record in any state, or None if it does not exist."""
        ...

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job: remove it if waiting, request cancellation if claimed."""
        ...

    async def wait_for_completion(self, job_id: str) -> JobRecord | None:
        """Wait until the job is done, dead, or gone (see `Queue.wait_for_completion`)."""
        ...

    async def stats(self, queue_name: str) -> QueueStats:
        """The counters of ``queue_name``."""
        ...

    async def dead_jobs(
        self, queue_name: str, *, after: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Dead-lettered jobs of ``queue_name`` in id order, starting after the id ``after``."""
        ...

    async def requeue_dead_job(self, job: JobRecord) -> None:
        """Revive a dead-lettered job as pending, with its attempts reset."""
        ...

    # ---------------------------------------------------------------- user KV

    async def kv_get(self, key: bytes) -> bytes | None:
        """The value stored under ``key`` in the user namespace, or None."""
        ...

    async def kv_put(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``; return once durable."""
        ...

    async def kv_delete(self, key: bytes) -> None:
        """Delete ``key`` (no error if absent); return once durable."""
        ...

    async def kv_compare_and_set(
        self, key: bytes, expected: bytes | None, new: bytes | None
    ) -> bool:
        """Replace ``key``'s value if it equals ``expected`` (None: absent); return whether."""
        ...

    async def kv_scan(
        self, prefix: bytes = b"", *, cursor: bytes | None = None, limit: int = 100
    ) -> KvPage:
        """Entries of the user namespace whose keys start with ``prefix``, in key order."""
        ...

    # ---------------------------------------------------------------- workers

    async def claim_batch(
        self, queue_name: str, max_jobs: int, *, lease: float | None = None
    ) -> list[Claim]:
        """Claim up to ``max_jobs`` jobs of ``queue_name`` (see `Queue.claim_batch`).

        May raise a transient error (`StorageUnavailable`) that a retry can cure.
        """
        ...

    async def wait_for_jobs_on(self, queue_name: str) -> None:
        """Wait until a job may be claimable on ``queue_name`` (a hint, not a promise)."""
        ...

    async def ack_with(self, claim: Claim, effects: Effects | None) -> list[EnqueueResult]:
        """Acknowledge a claimed job and apply ``effects`` in the same transaction."""
        ...

    async def nack(
        self,
        claim: Claim,
        error: str,
        *,
        retry_after: float | None = None,
        kv_writes: Mapping[bytes, bytes] | None = None,
        effects_if_dead: Effects | None = None,
    ) -> NackResult:
        """Report a failed attempt: retry with backoff, or dead-letter when attempts run out."""
        ...

    async def dead_letter(
        self, claim: Claim, reason: str, *, effects: Effects | None = None
    ) -> list[EnqueueResult]:
        """Move a claimed job to the dead-letter inbox at once (no retry)."""
        ...

    def renew_lease(self, claim: Claim, extension: float) -> int:
        """Set the claim's lease to expire ``extension`` seconds from now; return the expiry.

        Synchronous: an implementation whose leases live elsewhere records the new expiry at
        once and sends it on in the background.
        """
        ...

    def lease_expiry(self, claim: Claim) -> int | None:
        """When the claim's lease expires (ms since the epoch), or None if it is gone."""
        ...


if TYPE_CHECKING:
    from ._queue import Queue
    from ._store import Store

    def queue_implements_the_protocols(queue: Queue, store: Store) -> tuple[QueueLike, BlobStore]:
        """Never called: pyright proves here that `Queue` and `Store` match the protocols."""
        return queue, store
