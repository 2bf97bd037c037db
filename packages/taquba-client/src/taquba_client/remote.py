"""`RemoteQueue`: a `taquba.QueueLike` over a taquba server, for the layers' remote workers.

The one module of `taquba_client` that imports taquba (install ``taquba`` next to
``taquba-client`` to use it). With it, a `taquba.Worker`, a ``taquba_jobs.JobRunner`` or a
``taquba_workflow.Runtime`` runs in a process other than the owner, unchanged::

    async with taquba_client.remote.open_remote_queue("http://owner:8700", token=...) as queue:
        worker = taquba.Worker(queue, "emails", send_email)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)

How the in-process semantics carry over:

- A claim is a `taquba.Claim` whose token is a local int; the queue maps it to the server's
  opaque claim token and keeps the lease expiry locally for `RemoteQueue.lease_expiry`.
- A background renewer keeps every held claim's lease alive (one batched
  ``POST /v1/claims/renew`` per interval, a third of the shortest lease) and pushes the
  expiries `RemoteQueue.renew_lease` records (synchronous, as the protocol wants). When the
  server reports a cancel or a lost claim, it fires the claim's `taquba.CancelToken`.
- Errors are taquba's: `taquba.ClaimLost` for a lost claim (410), `taquba.StorageUnavailable`
  while the server is unreachable (transient: `taquba.Worker` retries with backoff),
  `taquba.StorageMisconfigured` for a refused token.
- `RemoteQueue.config` answers from ``GET /v1/config``, read once at open.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

import taquba
import taquba_client as e
import taquba_client as t
from taquba_client import AsyncClient

from ._wire import new_job_id

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
    from datetime import datetime

    from ._retry import RetryPolicy

__all__ = ["RemoteBlobStore", "RemoteQueue", "open_remote_queue"]

_WAIT_POLL = 30.0
_DEFAULT_LEASE = 30.0


@contextmanager
def _mapped(job_id: str = "") -> Generator[None]:
    """Raise taquba's error for a client error (the protocol speaks taquba's errors)."""
    try:
        yield
    except e.ServerUnavailable as exc:
        raise taquba.StorageUnavailable(str(exc)) from exc
    except e.ClaimLost as exc:  # the server's message is taquba's: say "claim ... lost" once
        reason = exc.message.removeprefix(f"claim on job {job_id!r} lost: ")
        raise taquba.ClaimLost(job_id, reason) from exc
    except e.JobNotFound as exc:
        raise taquba.JobNotFound(job_id) from exc
    except e.DuplicateJobId as exc:
        raise taquba.DuplicateJobId(job_id) from exc
    except e.KvConflict as exc:
        raise taquba.KvConflict(b"") from exc
    except e.InvalidState as exc:
        raise taquba.InvalidState(exc.message) from exc
    except e.InvalidRequest as exc:
        raise taquba.InvalidArgument(exc.field or "request", None, exc.message) from exc
    except (e.Unauthorized, e.Forbidden) as exc:
        raise taquba.StorageMisconfigured(f"the server refused the token: {exc}") from exc
    except e.ClientError as exc:
        raise taquba.StorageUnavailable(str(exc)) from exc


_NEW_RECORD_FIELDS = {f.name for f in dataclasses.fields(taquba.JobRecord)} >= {
    "woken_at",
    "wake_payload",
    "history_size",
}
"""Whether the installed taquba (0.10 on) has the record fields of wakes and the history."""


def _job(job: t.Job) -> taquba.JobRecord:
    extra: dict[str, Any] = {}
    if _NEW_RECORD_FIELDS:
        extra = {
            "woken_at": job.woken_at,
            "wake_payload": job.wake_payload,
            "history_size": job.history_size,
        }
    return taquba.JobRecord(
        id=job.id,
        queue_name=job.queue_name,
        payload=job.payload,
        status=taquba.JobStatus(job.status.value),
        priority=job.priority,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        enqueued_at=job.enqueued_at,
        headers=dict(job.headers),
        claimed_at=job.claimed_at,
        run_at=job.run_at,
        last_error=job.last_error,
        dedup_key=job.dedup_key,
        completed_at=job.completed_at,
        failed_at=job.failed_at,
        cancel_requested=job.cancel_requested,
        **extra,
    )


def _request(request: taquba.EnqueueRequest) -> t.EnqueueRequest:
    return t.EnqueueRequest(
        queue_name=request.queue_name,
        payload=request.payload,
        priority=request.priority,
        run_at=request.run_at,
        delay=request.delay,
        dedup_key=request.dedup_key,
        headers=dict(request.headers),
        max_attempts=request.max_attempts,
        job_id=request.job_id,
    )


def _effects(effects: taquba.Effects | None) -> t.Effects | None:
    if effects is None:
        return None
    return t.Effects(
        enqueues=[_request(r) for r in effects.enqueues],
        kv_writes=dict(effects.kv_writes),
        kv_deletes=list(effects.kv_deletes),
        kv_expect=dict(getattr(effects, "kv_expect", None) or {}),  # none before taquba 0.10
    )


def _results(results: Sequence[t.EnqueueResult]) -> list[taquba.EnqueueResult]:
    return [taquba.EnqueueResult(r.id, r.created) for r in results]


def _seconds(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _config(data: Mapping[str, Any]) -> taquba.QueueConfig:
    keep_done = _seconds(data.get("keep_done"))
    if data.get("keep_done_forever"):
        keep_done = math.inf
    backoff_max = _seconds(data.get("retry_backoff_max"))
    dead_retention = _seconds(data.get("dead_retention"))
    extra: dict[str, Any] = {}
    threshold = data.get("payload_offload_threshold")  # sent by taquba-server 0.3.1 and later
    if threshold is not None and _HAS_OFFLOAD:
        extra["payload_offload_threshold"] = int(threshold)
    return taquba.QueueConfig(
        max_attempts=int(data["max_attempts"]),
        lease_duration=float(data["lease_duration"]),
        default_priority=int(data["default_priority"]),
        retry_backoff_base=float(data["retry_backoff_base"]),
        retry_backoff_max=math.inf if backoff_max is None else backoff_max,
        keep_done=keep_done,
        dead_retention=dead_retention,
        **extra,
    )


_HAS_OFFLOAD = any(
    f.name == "payload_offload_threshold" for f in dataclasses.fields(taquba.QueueConfig)
)
"""Whether the installed taquba has payload offload (0.10 and later)."""


class RemoteBlobStore:
    """A `taquba.BlobStore` over the server's ``/v1/blobs`` endpoints."""

    __slots__ = ("_client",)

    def __init__(self, client: AsyncClient) -> None:
        """Wrap ``client``; `RemoteQueue.store` is one."""
        self._client = client

    async def put_blob(self, path: str, data: bytes, *, create_only: bool = False) -> bool:
        """Write ``data`` at ``path`` (see `taquba.BlobStore.put_blob`)."""
        with _mapped():
            return await self._client.blob_put(path, data, create_only=create_only)

    async def get_blob(self, path: str) -> bytes | None:
        """The blob at ``path``, or None."""
        with _mapped():
            return await self._client.blob_get(path)

    async def delete_blob(self, path: str) -> bool:
        """Delete the blob at ``path``; return whether there was one."""
        with _mapped():
            return await self._client.blob_delete(path)

    async def list_blobs(
        self, directory: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """The blob names under ``directory`` (relative to it), sorted."""
        with _mapped():
            return await self._client.blob_list(directory, start_after=start_after, limit=limit)


@dataclass(slots=True)
class _Held:
    claim: t.Claim
    local: taquba.Claim
    cancel: taquba.CancelToken
    lease: float
    expires_at: int
    wanted_until: int = 0


class RemoteQueue:
    """A `taquba.QueueLike` whose owner is a taquba server; build it with `open_remote_queue`.

    Its methods are `taquba.Queue`'s, with its semantics (see the module docstring for how
    claims, leases and errors carry over). Members outside `taquba.QueueLike` are not there.
    """

    def __init__(self, client: AsyncClient, server_config: t.ServerConfig) -> None:
        """Library-internal: `open_remote_queue` builds it."""
        self._client = client
        self._server_config = server_config
        self._default = _config(server_config.default)
        self._configs = {name: _config(c) for name, c in server_config.queues.items()}
        self._clock = taquba.SystemClock()
        self._store = RemoteBlobStore(client)
        self._failure: taquba.TaqubaError | None = None
        self._stopped = trio.Event()
        self._tokens = itertools.count(1)
        self._held: dict[int, _Held] = {}
        self._wake = trio.Event()

    @property
    def client(self) -> AsyncClient:
        """The client this queue talks through."""
        return self._client

    @property
    def name(self) -> str:
        """The server's database name."""
        return self._server_config.name

    @property
    def clock(self) -> taquba.Clock:
        """The local system clock (the server's clock is the one that stamps records)."""
        return self._clock

    @property
    def store(self) -> RemoteBlobStore:
        """The server's blob store."""
        return self._store

    @property
    def failure(self) -> taquba.TaqubaError | None:
        """`taquba.QueueClosed` once the remote queue is closed, else None."""
        return self._failure

    def config(self, queue_name: str) -> taquba.QueueConfig:
        """The configuration the server runs ``queue_name`` with (read at open)."""
        return self._configs.get(queue_name, self._default)

    def next_job_id(self) -> str:
        """A fresh ULID."""
        return new_job_id()

    async def wait_stopped(self) -> None:
        """Wait until this remote queue is closed."""
        await self._stopped.wait()

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
    ) -> taquba.EnqueueResult:
        """Enqueue a job (see `taquba.Queue.enqueue`); idempotent over retries."""
        job_id = job_id if job_id is not None else new_job_id()
        with _mapped(job_id):
            result = await self._client.enqueue(
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
        return taquba.EnqueueResult(result.id, result.created)

    async def enqueue_batch(
        self,
        requests: Sequence[taquba.EnqueueRequest],
        *,
        kv_writes: Mapping[bytes, bytes] | None = None,
        kv_expect: Mapping[bytes, bytes | None] | None = None,
    ) -> list[taquba.EnqueueResult]:
        """Enqueue several jobs in one transaction."""
        with _mapped():
            results = await self._client.enqueue_batch(
                [_request(r) for r in requests], kv_writes=kv_writes, kv_expect=kv_expect
            )
        return _results(results)

    async def get_job(self, job_id: str) -> taquba.JobRecord | None:
        """The job's record, or None."""
        try:
            with _mapped(job_id):
                return _job(await self._client.get_job(job_id))
        except taquba.JobNotFound:
            return None

    async def get_job_history(self, job_id: str) -> list[taquba.JobAttempt] | None:
        """How each attempt of the job ended, oldest first; None if no job has this id.

        Needs taquba 0.10 installed (for `taquba.JobAttempt`).
        """
        with _mapped(job_id):
            history = await self._client.get_job_history(job_id)
        if history is None:
            return None
        return [
            taquba.JobAttempt(
                attempt=a.attempt,
                outcome=taquba.AttemptOutcome(a.outcome.value),
                recorded_at=a.recorded_at,
                claimed_at=a.claimed_at,
                error=a.error,
            )
            for a in history
        ]

    async def cancel(self, job_id: str) -> taquba.CancelOutcome:
        """Cancel a job."""
        with _mapped(job_id):
            return taquba.CancelOutcome((await self._client.cancel(job_id)).value)

    async def wake_scheduled(self, job_id: str, payload: bytes | None = None) -> taquba.WakeOutcome:
        """Make a scheduled job due now with ``payload`` (see `taquba.Queue.wake_scheduled`).

        Not resent after a lost answer (see `taquba_client.Client.wake_scheduled`): that
        raises `taquba.StorageUnavailable`. Needs taquba 0.10 installed.
        """
        with _mapped(job_id):
            outcome = await self._client.wake_scheduled(job_id, payload)
        return taquba.WakeOutcome(outcome.value)

    async def wait_for_completion(self, job_id: str) -> taquba.JobRecord | None:
        """Wait until the job is done, dead or gone."""
        with _mapped(job_id):
            job = await self._client.wait_for_completion(job_id)
        return None if job is None else _job(job)

    async def stats(self, queue_name: str) -> taquba.QueueStats:
        """The queue's counters."""
        with _mapped():
            s = await self._client.stats(queue_name)
        return taquba.QueueStats(
            s.queue_name, s.pending, s.scheduled, s.claimed, s.done, s.dead, s.quarantined
        )

    async def dead_jobs(
        self, queue_name: str, *, after: str | None = None, limit: int = 100
    ) -> list[taquba.JobRecord]:
        """Dead-lettered jobs in id order (needs the ``admin`` scope)."""
        with _mapped():
            return [
                _job(j) for j in await self._client.dead_jobs(queue_name, after=after, limit=limit)
            ]

    async def requeue_dead_job(self, job: taquba.JobRecord) -> None:
        """Revive a dead job (needs the ``admin`` scope)."""
        with _mapped(job.id):
            await self._client.requeue(job.id)

    async def kv_get(self, key: bytes) -> bytes | None:
        """A user KV value, or None."""
        with _mapped():
            return await self._client.kv_get(key)

    async def kv_put(self, key: bytes, value: bytes) -> None:
        """Write a user KV value."""
        with _mapped():
            await self._client.kv_put(key, value)

    async def kv_delete(self, key: bytes) -> None:
        """Delete a user KV key."""
        with _mapped():
            await self._client.kv_delete(key)

    async def kv_compare_and_set(
        self, key: bytes, expected: bytes | None, new: bytes | None
    ) -> bool:
        """Compare and swap a user KV key."""
        with _mapped():
            return await self._client.kv_cas(key, expected, new)

    async def kv_scan(
        self, prefix: bytes = b"", *, cursor: bytes | None = None, limit: int = 100
    ) -> taquba.KvPage:
        """A page of user KV entries under ``prefix``."""
        with _mapped():
            page = await self._client.kv_scan(prefix, cursor=cursor, limit=limit)
        return taquba.KvPage(page.entries, page.next_cursor)

    async def claim_batch(
        self, queue_name: str, max_jobs: int, *, lease: float | None = None
    ) -> list[taquba.Claim]:
        """Claim up to ``max_jobs`` jobs; the renewer keeps their leases alive until settled."""
        with _mapped():
            claims = await self._client.claim_batch(queue_name, max_jobs, lease=lease)
        out: list[taquba.Claim] = []
        for claim in claims:
            token = next(self._tokens)
            cancel = taquba.CancelToken(cancelled=claim.job.cancel_requested)
            local = taquba.Claim(_job(claim.job), token=token, owner=self, cancel=cancel)
            length = claim.lease or lease or self.config(queue_name).lease_duration
            self._held[token] = _Held(claim, local, cancel, length, claim.lease_expires_at)
            out.append(local)
        self._wake.set()
        return out

    async def wait_for_jobs_on(self, queue_name: str) -> None:
        """Return when jobs may be claimable on ``queue_name`` (long polls the server)."""
        while True:
            with _mapped():
                if await self._client.wait_for_jobs(queue_name, wait=_WAIT_POLL):
                    return

    def _take(self, claim: taquba.Claim) -> _Held:
        held = self._held.get(claim.token) if claim.owner is self else None
        if held is None:
            raise taquba.ClaimLost(claim.id, "this remote queue holds no such claim")
        return held

    async def ack_with(
        self, claim: taquba.Claim, effects: taquba.Effects | None
    ) -> list[taquba.EnqueueResult]:
        """Acknowledge the job, applying ``effects``."""
        held = self._take(claim)
        with self._settling(claim), _mapped(claim.id):
            return _results(await self._client.ack(held.claim, _effects(effects)))

    async def nack(
        self,
        claim: taquba.Claim,
        error: str,
        *,
        retry_after: float | None = None,
        kv_writes: Mapping[bytes, bytes] | None = None,
        effects_if_dead: taquba.Effects | None = None,
    ) -> taquba.NackResult:
        """Fail this attempt."""
        held = self._take(claim)
        with self._settling(claim), _mapped(claim.id):
            result = await self._client.nack(
                held.claim,
                error,
                retry_after=retry_after,
                kv_writes=kv_writes,
                effects_if_dead=_effects(effects_if_dead),
            )
        return taquba.NackResult(result.dead, _results(result.enqueued))

    async def dead_letter(
        self, claim: taquba.Claim, reason: str, *, effects: taquba.Effects | None = None
    ) -> list[taquba.EnqueueResult]:
        """Dead-letter the job now."""
        held = self._take(claim)
        with self._settling(claim), _mapped(claim.id):
            return _results(
                await self._client.dead_letter(held.claim, reason, effects=_effects(effects))
            )

    @contextmanager
    def _settling(self, claim: taquba.Claim) -> Generator[None]:
        """Forget the claim once settled, or once settling it failed.

        Not after a `taquba.KvConflict`: nothing was written then, and the server still holds
        the claim, so it can be settled again.
        """
        try:
            yield
        except taquba.KvConflict:
            raise
        except BaseException:
            self._release(claim)
            raise
        self._release(claim)

    def _release(self, claim: taquba.Claim) -> None:
        self._held.pop(claim.token, None)

    def renew_lease(self, claim: taquba.Claim, extension: float) -> int:
        """Record that the lease must last ``extension`` more seconds; return the new expiry.

        The background renewer sends it to the server at once (and keeps renewing).

        Raises:
            ClaimLost: this queue no longer holds the claim (settled, or lost on the server).
        """
        held = self._take(claim)
        until = self._clock.now_ms() + int(extension * 1000)
        held.wanted_until = max(held.wanted_until, until)
        held.expires_at = max(held.expires_at, until)
        self._wake.set()
        return held.expires_at

    def lease_expiry(self, claim: taquba.Claim) -> int | None:
        """The lease expiry as this queue last learnt or set it, or None once the claim is gone."""
        held = self._held.get(claim.token) if claim.owner is self else None
        return None if held is None else held.expires_at

    async def _renewer(self) -> None:
        while True:
            shortest = min((h.lease for h in self._held.values()), default=_DEFAULT_LEASE)
            with trio.move_on_after(max(0.05, shortest / 3)):
                await self._wake.wait()
            self._wake = trio.Event()
            if not self._held:
                continue
            now = self._clock.now_ms()
            held = list(self._held.values())
            items = [(h.claim, max(h.lease, (h.wanted_until - now) / 1000)) for h in held]
            try:
                results = await self._client.renew_batch(items)
            except e.ClientError:
                await trio.sleep(0.5)
                continue
            for entry, result in zip(held, results, strict=False):
                if result.job_id != entry.claim.id:
                    continue
                if result.lost:
                    if self._held.get(entry.local.token) is entry:
                        del self._held[entry.local.token]
                    entry.cancel.fire()
                    continue
                if result.expires_at is not None:
                    entry.expires_at = result.expires_at
                if result.cancel_requested:
                    entry.cancel.fire()

    def _close(self) -> None:
        self._failure = taquba.QueueClosed("the remote queue is closed")
        self._stopped.set()

    def __repr__(self) -> str:
        return f"<taquba_client.remote.RemoteQueue {self._client.base_url}>"


@asynccontextmanager
async def open_remote_queue(
    url: str | None = None,
    *,
    token: str | None = None,
    request_timeout: float = 10.0,
    retry: RetryPolicy | None = None,
) -> AsyncGenerator[RemoteQueue]:
    """Open a `RemoteQueue` on the server at ``url`` (default: ``TAQUBA_SERVER``), under trio.

    ``token`` defaults to ``TAQUBA_TOKEN``; ``request_timeout`` and ``retry`` are the
    `taquba_client.AsyncClient` options.

    Reads the server's configuration, starts the lease renewer, and on exit stops it and
    closes the client. Claims still held then are left to their lease.

    Raises:
        StorageUnavailable: the server cannot be reached.
        StorageMisconfigured: the server refused the token.
    """
    async with AsyncClient(url, token=token, timeout=request_timeout, retry=retry) as client:
        with _mapped():
            server_config = await client.config()
        queue = RemoteQueue(client, server_config)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(queue._renewer)  # pyright: ignore[reportPrivateUsage]
                try:
                    yield queue
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            queue._close()  # pyright: ignore[reportPrivateUsage]
