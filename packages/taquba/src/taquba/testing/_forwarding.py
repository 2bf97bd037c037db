"""`ForwardingQueue`: a `QueueLike` that exposes only the protocol, forwarding to another."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from .._clock import Clock
    from .._config import QueueConfig
    from .._errors import TaqubaError
    from .._protocol import BlobStore, QueueLike
    from .._records import JobRecord, QueueStats
    from .._types import (
        CancelOutcome,
        Claim,
        Effects,
        EnqueueRequest,
        EnqueueResult,
        KvPage,
        NackResult,
    )

__all__ = ["ForwardingQueue"]


class _ForwardingStore:
    """A `BlobStore` with the four blob calls and nothing else, forwarding to another."""

    __slots__ = ("_calls", "_store")

    def __init__(self, store: BlobStore, calls: Counter[str]) -> None:
        self._store = store
        self._calls = calls

    async def put_blob(self, path: str, data: bytes, *, create_only: bool = False) -> bool:
        self._calls["store.put_blob"] += 1
        return await self._store.put_blob(path, data, create_only=create_only)

    async def get_blob(self, path: str) -> bytes | None:
        self._calls["store.get_blob"] += 1
        return await self._store.get_blob(path)

    async def delete_blob(self, path: str) -> bool:
        self._calls["store.delete_blob"] += 1
        return await self._store.delete_blob(path)

    async def list_blobs(
        self, directory: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        self._calls["store.list_blobs"] += 1
        return await self._store.list_blobs(directory, start_after=start_after, limit=limit)


class ForwardingQueue:
    """A `taquba.QueueLike` with the protocol's members and nothing else.

    Every call goes to the wrapped queue (usually a real `taquba.Queue`) and is counted in
    `calls`. Running a component over it proves the component needs only the protocol,
    so it also runs over other implementations (a remote queue): any use of a `Queue`
    member outside the protocol fails with `AttributeError`, and so does any use of a
    `Store` member other than the four blob calls.

        async with open_test_queue() as queue:
            runner = JobRunner(ForwardingQueue(queue), [job])

    Claims pass through unchanged: they belong to the wrapped queue, which settles them.

    Args:
        queue: the queue to forward to.
    """

    __slots__ = ("__weakref__", "_calls", "_queue", "_store")

    def __init__(self, queue: QueueLike) -> None:
        """Wrap ``queue``."""
        self._queue = queue
        self._calls: Counter[str] = Counter()
        self._store = _ForwardingStore(queue.store, self._calls)

    @property
    def calls(self) -> Counter[str]:
        """How many times each member was used (``"claim_batch"``, ``"store.get_blob"``...)."""
        return self._calls

    @property
    def name(self) -> str:
        """The wrapped queue's name."""
        self._calls["name"] += 1
        return self._queue.name

    @property
    def clock(self) -> Clock:
        """The wrapped queue's clock."""
        self._calls["clock"] += 1
        return self._queue.clock

    @property
    def store(self) -> BlobStore:
        """The wrapped queue's blob calls, and nothing else of its store."""
        self._calls["store"] += 1
        return self._store

    @property
    def failure(self) -> TaqubaError | None:
        """The wrapped queue's failure."""
        self._calls["failure"] += 1
        return self._queue.failure

    def config(self, queue_name: str) -> QueueConfig:
        """Forwarded."""
        self._calls["config"] += 1
        return self._queue.config(queue_name)

    def next_job_id(self) -> str:
        """Forwarded."""
        self._calls["next_job_id"] += 1
        return self._queue.next_job_id()

    async def wait_stopped(self) -> None:
        """Forwarded."""
        self._calls["wait_stopped"] += 1
        await self._queue.wait_stopped()

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
        """Forwarded."""
        self._calls["enqueue"] += 1
        return await self._queue.enqueue(
            queue_name,
            payload,
            priority=priority,
            run_at=run_at,
            delay=delay,
            dedup_key=dedup_key,
            headers=headers,
            max_attempts=max_attempts,
            job_id=job_id,
            kv_writes=kv_writes,
            kv_expect=kv_expect,
        )

    async def enqueue_batch(
        self,
        requests: Sequence[EnqueueRequest],
        *,
        kv_writes: Mapping[bytes, bytes] | None = None,
        kv_expect: Mapping[bytes, bytes | None] | None = None,
    ) -> list[EnqueueResult]:
        """Forwarded."""
        self._calls["enqueue_batch"] += 1
        return await self._queue.enqueue_batch(requests, kv_writes=kv_writes, kv_expect=kv_expect)

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Forwarded."""
        self._calls["get_job"] += 1
        return await self._queue.get_job(job_id)

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Forwarded."""
        self._calls["cancel"] += 1
        return await self._queue.cancel(job_id)

    async def wait_for_completion(self, job_id: str) -> JobRecord | None:
        """Forwarded."""
        self._calls["wait_for_completion"] += 1
        return await self._queue.wait_for_completion(job_id)

    async def stats(self, queue_name: str) -> QueueStats:
        """Forwarded."""
        self._calls["stats"] += 1
        return await self._queue.stats(queue_name)

    async def dead_jobs(
        self, queue_name: str, *, after: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Forwarded."""
        self._calls["dead_jobs"] += 1
        return await self._queue.dead_jobs(queue_name, after=after, limit=limit)

    async def requeue_dead_job(self, job: JobRecord) -> None:
        """Forwarded."""
        self._calls["requeue_dead_job"] += 1
        await self._queue.requeue_dead_job(job)

    async def kv_get(self, key: bytes) -> bytes | None:
        """Forwarded."""
        self._calls["kv_get"] += 1
        return await self._queue.kv_get(key)

    async def kv_put(self, key: bytes, value: bytes) -> None:
        """Forwarded."""
        self._calls["kv_put"] += 1
        await self._queue.kv_put(key, value)

    async def kv_delete(self, key: bytes) -> None:
        """Forwarded."""
        self._calls["kv_delete"] += 1
        await self._queue.kv_delete(key)

    async def kv_compare_and_set(
        self, key: bytes, expected: bytes | None, new: bytes | None
    ) -> bool:
        """Forwarded."""
        self._calls["kv_compare_and_set"] += 1
        return await self._queue.kv_compare_and_set(key, expected, new)

    async def kv_scan(
        self, prefix: bytes = b"", *, cursor: bytes | None = None, limit: int = 100
    ) -> KvPage:
        """Forwarded."""
        self._calls["kv_scan"] += 1
        return await self._queue.kv_scan(prefix, cursor=cursor, limit=limit)

    async def claim_batch(
        self, queue_name: str, max_jobs: int, *, lease: float | None = None
    ) -> list[Claim]:
        """Forwarded."""
        self._calls["claim_batch"] += 1
        return await self._queue.claim_batch(queue_name, max_jobs, lease=lease)

    async def wait_for_jobs_on(self, queue_name: str) -> None:
        """Forwarded."""
        self._calls["wait_for_jobs_on"] += 1
        await self._queue.wait_for_jobs_on(queue_name)

    async def ack_with(self, claim: Claim, effects: Effects | None) -> list[EnqueueResult]:
        """Forwarded."""
        self._calls["ack_with"] += 1
        return await self._queue.ack_with(claim, effects)

    async def nack(
        self,
        claim: Claim,
        error: str,
        *,
        retry_after: float | None = None,
        kv_writes: Mapping[bytes, bytes] | None = None,
        effects_if_dead: Effects | None = None,
    ) -> NackResult:
        """Forwarded."""
        self._calls["nack"] += 1
        return await self._queue.nack(
            claim,
            error,
            retry_after=retry_after,
            kv_writes=kv_writes,
            effects_if_dead=effects_if_dead,
        )

    async def dead_letter(
        self, claim: Claim, reason: str, *, effects: Effects | None = None
    ) -> list[EnqueueResult]:
        """Forwarded."""
        self._calls["dead_letter"] += 1
        return await self._queue.dead_letter(claim, reason, effects=effects)

    def renew_lease(self, claim: Claim, extension: float) -> int:
        """Forwarded."""
        self._calls["renew_lease"] += 1
        return self._queue.renew_lease(claim, extension)

    def lease_expiry(self, claim: Claim) -> int | None:
        """Forwarded."""
        self._calls["lease_expiry"] += 1
        return self._queue.lease_expiry(claim)

    def __repr__(self) -> str:
        return f"ForwardingQueue({self._queue!r})"


if TYPE_CHECKING:

    def forwarding_queue_implements_the_protocol(queue: ForwardingQueue) -> QueueLike:
        """Never called: pyright proves here that `ForwardingQueue` matches `QueueLike`."""
        return queue
