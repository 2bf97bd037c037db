"""`Client` (synchronous) and `AsyncClient` (asyncio and trio): the HTTP API, in MessagePack.

Both faces send the same `Call` descriptions built in `_wire`, so they cannot drift apart.
Retries follow one rule for both. A failure that proves nothing reached the queue (a connect
error, a ``503``) is retried for every call; a failure that leaves it unknown (a timeout while
waiting for the answer, a connection dropped before the answer) is retried only for calls that
are safe to repeat. Enqueue is one of those because the client fixes the job id before the
first attempt: a repeat of a request that landed answers ``created=False``. A claim is not: a
repeat would claim more jobs, and the claims of a lost answer come back after their lease.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
import httpx

from . import _wire as wire
from ._errors import (
    ClaimLost,
    ClientError,
    JobNotFound,
    KvConflict,
    ServerUnavailable,
    UsageError,
    WaitTimeout,
)
from ._retry import RetryPolicy
from ._types import (
    Ack,
    CancelOutcome,
    Claim,
    DeadLetter,
    Effects,
    EnqueueRequest,
    EnqueueResult,
    Health,
    Job,
    JobAttempt,
    JobPage,
    JobStatus,
    KvPage,
    Nack,
    NackResult,
    QueueStats,
    RenewResult,
    ServerConfig,
    Settlement,
    SettleResult,
    WakeOutcome,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
    from datetime import datetime
    from types import TracebackType

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
"""Seconds for connecting, sending and waiting for an answer (long polls add their wait)."""
WAIT_POLL = 30.0
"""Seconds of one long poll of ``GET /v1/jobs/{id}/wait``."""

_SAFE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Failures before the request left: retried for every call."""
_AMBIGUOUS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
"""Failures after the request may have reached the server: retried for idempotent calls."""


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A request body held in memory, iterable sync and async without a generator."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        return iter((self._data,))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._data)


class _Once:
    """An async iterator over one chunk."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


class _Base:
    """What both faces share: configuration, headers and the decision to retry."""

    def __init__(
        self,
        base_url: str | None,
        token: str | None,
        timeout: float | httpx.Timeout,
        retry: RetryPolicy | None,
    ) -> None:
        url = base_url if base_url is not None else os.environ.get("TAQUBA_SERVER")
        if not url:
            raise UsageError("no server URL: pass base_url or set TAQUBA_SERVER")
        self._base_url = url.rstrip("/")
        token = token if token is not None else os.environ.get("TAQUBA_TOKEN") or None
        self._headers = {"content-type": wire.MSGPACK, "accept": wire.MSGPACK}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._retry = retry if retry is not None else RetryPolicy()

    @property
    def base_url(self) -> str:
        """The server's base URL."""
        return self._base_url

    @property
    def retry_policy(self) -> RetryPolicy:
        """How transient failures are retried."""
        return self._retry

    def _request_args(self, call: wire.Call[Any]) -> dict[str, Any]:
        timeout = self._timeout
        if call.long_poll:
            read = (timeout.read or DEFAULT_TIMEOUT) + call.long_poll
            timeout = httpx.Timeout(
                connect=timeout.connect, read=read, write=timeout.write, pool=timeout.pool
            )
        return {
            "method": call.method,
            "url": call.path,
            "content": None if call.body is None else wire.encode(call.body),
            "params": call.params,
            "timeout": timeout,
        }

    def _build(self, http: httpx.Client | httpx.AsyncClient, call: wire.Call[Any]) -> httpx.Request:
        request = http.build_request(**self._request_args(call))
        if call.body is not None:
            # httpx wraps bytes in a stream whose async iterator is an async generator; a
            # request cancelled mid-send (a long poll at shutdown, Ctrl-C) leaves that
            # generator to the garbage collector, with a ResourceWarning. `_Body` has none.
            request.stream = _Body(request.content)
        return request

    def _failed(self, call: wire.Call[Any], exc: Exception, attempt: int) -> bool:
        """Whether ``exc`` on try ``attempt`` may be retried; raises if the tries are used up."""
        ambiguous = not isinstance(exc, _SAFE)
        retry = call.idempotent or not ambiguous
        if not retry or attempt >= self._retry.attempts:
            raise ServerUnavailable(
                f"{call.method} {call.path}: {type(exc).__name__}: {exc}"
                + ("" if retry else " (not retried: the request may have reached the server)")
            ) from exc
        return ambiguous

    def _answer(self, call: wire.Call[T], response: httpx.Response) -> T | ClientError:
        """The parsed answer, or the error it stands for (a 503 comes back as an error)."""
        content_type = response.headers.get("content-type")
        if 200 <= response.status_code < 300:
            return call.parse(wire.decode(response.content, content_type))
        body = None
        if response.content:
            try:
                body = wire.decode(response.content, content_type)
            except ClientError:
                body = None
        return wire.error_for(response.status_code, body)

    @staticmethod
    def _retry_after(response: httpx.Response | None) -> float | None:
        if response is None:
            return None
        try:
            return float(response.headers.get("retry-after", ""))
        except ValueError:
            return None

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} {self._base_url}>"


def _request(
    queue_name: str,
    payload: bytes,
    priority: int | None,
    run_at: datetime | None,
    delay: float | None,
    dedup_key: str | None,
    headers: Mapping[str, str] | None,
    max_attempts: int | None,
    job_id: str | None,
) -> EnqueueRequest:
    return EnqueueRequest(
        queue_name=queue_name,
        payload=payload,
        priority=priority,
        run_at=run_at,
        delay=delay,
        dedup_key=dedup_key,
        headers=dict(headers or {}),
        max_attempts=max_attempts,
        job_id=job_id,
    )


def _renewed(claim: Claim, results: list[RenewResult]) -> RenewResult:
    result = results[0]
    if result.lost:
        raise ClaimLost(f"claim on job {claim.id} lost", code="claim_lost", status=410)
    return result


class Client(_Base):
    """A synchronous client of a taquba server, for Django, Flask, scripts and threads.

    Thread-safe: one `Client` (one connection pool) serves every thread of a process. Use it
    as a context manager, or call `close`.

        with taquba_client.Client("http://127.0.0.1:8000", token="...") as client:
            result = client.enqueue("emails", b"hello")
            job = client.wait_for_completion(result.id, timeout=60)

    Args:
        base_url: The server, e.g. ``"http://127.0.0.1:8000"``; default: ``TAQUBA_SERVER``.
        token: The bearer token; default: ``TAQUBA_TOKEN`` (none if unset).
        timeout: Seconds to connect, send and wait for an answer, or an `httpx.Timeout`.
            Long polls (`claim_batch` with ``wait``, `wait_for_completion`) add their wait.
        retry: How transient failures are retried (default: `RetryPolicy()`).
        transport: An httpx transport to use instead of the network (for tests and proxies).

    Raises:
        UsageError: no URL was given and ``TAQUBA_SERVER`` is not set.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, retry)
        self._http = httpx.Client(
            base_url=self._base_url,
            headers=self._headers,
            timeout=self._timeout,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, call: wire.Call[T]) -> T:
        attempt = 0
        ambiguous = False
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = self._http.send(self._build(self._http, call))
            except (*_SAFE, *_AMBIGUOUS) as exc:
                ambiguous |= self._failed(call, exc, attempt)
                time.sleep(self._retry.delay(attempt))
                continue
            except RuntimeError as exc:
                raise UsageError(f"the client is closed: {exc}") from exc
            answer = self._answer(call, response)
            if not isinstance(answer, ClientError):
                return answer
            if isinstance(answer, ServerUnavailable) and attempt < self._retry.attempts:
                time.sleep(self._retry.delay(attempt, self._retry_after(response)))
                continue
            if (
                ambiguous
                and isinstance(answer, KvConflict)
                and call.landed_if_job is not None
                and call.landed_result is not None
                and self._landed(call.landed_if_job)
            ):
                return call.landed_result
            raise answer

    def _landed(self, job_id: str) -> bool:
        try:
            self._run(wire.get_job(job_id))
        except JobNotFound:
            return False
        return True

    # -- producer side -------------------------------------------------------------------

    def enqueue(
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
        """Enqueue one job; safe to retry, and retried on transient failures.

        The client assigns a ULID job id before the first attempt when ``job_id`` is None, so
        a retry after a timeout never makes a second job: the server answers ``created=False``
        for an id it already holds with the same queue and payload.

        Args:
            queue_name: The queue.
            payload: The job's bytes.
            priority: Claim priority (lower first); default: the queue's.
            run_at: Do not claim before this (timezone-aware) time.
            delay: Do not claim for this many seconds (exclusive with ``run_at``).
            dedup_key: Enqueue nothing if a pending or scheduled job holds this key.
            headers: Caller metadata stored with the job.
            max_attempts: Override the queue's ``max_attempts``.
            job_id: The job's id (1 to 128 of ``[A-Za-z0-9_-]``); default: a new ULID.
            kv_writes: User KV entries written in the same transaction.
            kv_expect: KV preconditions (``None``: the key must be absent).

        Returns:
            The job id and whether this call created it (False on a dedup hit or a repeat).

        Raises:
            InvalidRequest: an option is invalid (``field`` names it).
            DuplicateJobId: ``job_id`` exists with different content.
            KvConflict: a ``kv_expect`` entry did not hold.
            ServerUnavailable: the server stayed unreachable through the retries.
        """
        request = _request(
            queue_name, payload, priority, run_at, delay, dedup_key, headers, max_attempts, job_id
        )
        return self._run(wire.enqueue(request, kv_writes, kv_expect))

    def enqueue_batch(
        self,
        requests: Sequence[EnqueueRequest],
        *,
        kv_writes: Mapping[bytes, bytes] | None = None,
        kv_expect: Mapping[bytes, bytes | None] | None = None,
    ) -> list[EnqueueResult]:
        """Enqueue several jobs in one transaction (all or none); safe to retry, as `enqueue`."""
        return self._run(wire.enqueue_batch(requests, kv_writes, kv_expect))

    def get_job(self, job_id: str) -> Job:
        """The job's current record.

        Raises:
            JobNotFound: no job has this id (or it was done and not kept).
        """
        return self._run(wire.get_job(job_id))

    def get_job_history(self, job_id: str) -> list[JobAttempt] | None:
        """How each attempt of the job ended, oldest first; None if no job has this id.

        One `JobAttempt` per end of an attempt (retried, dead-lettered, lease expired,
        interrupted by a server restart, or completed where the queue keeps done jobs) and per
        requeue from the dead-letter inbox. The history goes when the job does. A read:
        retried on transient failures.

        Raises:
            InvalidRequest: a malformed ``job_id``.
            NotFound: the server has no history endpoint (taquba-server before 0.3).
        """
        try:
            return self._run(wire.get_job_history(job_id))
        except JobNotFound:
            return None

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job: delete it if it waits, ask its handler to stop if it runs."""
        return self._run(wire.cancel(job_id))

    def wake_scheduled(self, job_id: str, payload: bytes | None = None) -> WakeOutcome:
        """Make a scheduled job due now, with ``payload`` on its record.

        The job becomes pending at once (`WakeOutcome.WOKEN`); its ``woken_at`` and
        ``wake_payload`` stay on the record, so every later delivery sees them. A job that is
        not scheduled any more gives `WakeOutcome.NOT_SCHEDULED`, an unknown id
        `WakeOutcome.NOT_FOUND`. Durable when it returns.

        Not retried once the request may have reached the server (a timeout, a dropped
        answer): a repeat of a wake that landed would answer ``NOT_SCHEDULED``, or wake the
        job's next retry if it failed meanwhile. Such a failure raises `ServerUnavailable`;
        `get_job` then tells (``woken_at``, ``wake_payload``). Connect errors and ``503`` are
        retried.

        Raises:
            InvalidRequest: a malformed ``job_id``.
            ServerUnavailable: the server was unreachable, or the answer was lost.
        """
        return self._run(wire.wake_scheduled(job_id, payload))

    def wait_for_completion(self, job_id: str, *, timeout: float | None = None) -> Job | None:
        """Block until the job is done or dead, long-polling the server.

        Args:
            job_id: The job.
            timeout: The most seconds to wait; None waits as long as it takes.

        Returns:
            The finished job, or None if no such job exists (never enqueued, or done and not
            kept by the queue's configuration).

        Raises:
            WaitTimeout: ``timeout`` passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            poll = WAIT_POLL
            if deadline is not None:
                poll = min(poll, max(0.0, deadline - time.monotonic()))
            found, finished = self._run(wire.wait_job(job_id, poll))
            if finished:
                return found
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} did not finish within {timeout} s")

    def stats(self, queue_name: str) -> QueueStats:
        """The queue's counters."""
        return self._run(wire.stats(queue_name))

    def list_queues(self) -> list[str]:
        """The names of the queues that hold or held jobs."""
        return self._run(wire.list_queues())

    def config(self) -> ServerConfig:
        """The queue configuration the server runs with."""
        return self._run(wire.config())

    def health(self) -> Health:
        """The server's health (needs no token)."""
        return self._run(wire.health())

    # -- operators -----------------------------------------------------------------------

    def list_jobs(
        self,
        queue_name: str,
        status: JobStatus | str,
        *,
        cursor: bytes | None = None,
        limit: int | None = None,
    ) -> JobPage:
        """One page of the queue's jobs in ``status`` (``admin`` scope)."""
        return self._run(wire.list_jobs(queue_name, status, cursor, limit))

    def dead_jobs(
        self, queue_name: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Job]:
        """The dead-letter inbox, in id order after ``after`` (``admin`` scope)."""
        return self._run(wire.dead_jobs(queue_name, after, limit))

    def requeue(self, job_id: str) -> None:
        """Move a dead job back to pending (``admin`` scope).

        Not retried after a timeout: a repeat of one that landed would fail with
        `InvalidState` since the job is no longer dead.

        Raises:
            JobNotFound: no such job.
            InvalidState: the job is not dead.
        """
        return self._run(wire.requeue(job_id))

    def purge(self, queue_name: str, status: JobStatus | str) -> int:
        """Delete the queue's ``dead`` or ``done`` jobs (``admin`` scope); return how many."""
        return self._run(wire.purge(queue_name, status))

    # -- KV and blobs --------------------------------------------------------------------

    def kv_get(self, key: bytes) -> bytes | None:
        """The value of a user KV key, or None."""
        return self._run(wire.kv_get(key))

    def kv_put(self, key: bytes, value: bytes) -> None:
        """Write a user KV key."""
        self._run(wire.kv_put(key, value))

    def kv_delete(self, key: bytes) -> None:
        """Delete a user KV key."""
        self._run(wire.kv_delete(key))

    def kv_cas(self, key: bytes, expected: bytes | None, new: bytes | None) -> bool:
        """Swap ``key`` from ``expected`` to ``new`` (None: absent); return whether it swapped.

        Not retried after a timeout: a repeat of a swap that landed would report False.
        """
        return self._run(wire.kv_cas(key, expected, new))

    def kv_scan(
        self, prefix: bytes = b"", *, cursor: bytes | None = None, limit: int | None = None
    ) -> KvPage:
        """One page of user KV entries under ``prefix``."""
        return self._run(wire.kv_scan(prefix, cursor, limit))

    def blob_get(self, path: str) -> bytes | None:
        """A blob of the store, or None."""
        return self._run(wire.blob_get(path))

    def blob_put(self, path: str, data: bytes, *, create_only: bool = False) -> bool:
        """Write a blob; with ``create_only``, only if absent. Return whether it was written."""
        return self._run(wire.blob_put(path, data, create_only))

    def blob_delete(self, path: str) -> bool:
        """Delete a blob; return whether it existed."""
        return self._run(wire.blob_delete(path))

    def blob_list(
        self, directory: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """The blob names under ``directory`` (recursively, relative to it), sorted."""
        return self._run(wire.blob_list(directory, start_after, limit))

    # -- worker side ---------------------------------------------------------------------

    def claim_batch(
        self,
        queue_name: str,
        max_jobs: int = 1,
        *,
        lease: float | None = None,
        wait: float = 0.0,
    ) -> list[Claim]:
        """Claim up to ``max_jobs`` jobs (``work`` scope), long-polling up to ``wait`` seconds.

        Not retried once the request may have reached the server (a timeout, a dropped
        answer): a repeat would claim other jobs, and those the lost answer held come back
        after their lease. Connect errors and ``503`` are retried.
        """
        return self._run(wire.claim_batch(queue_name, max_jobs, lease, wait))

    def wait_for_jobs(self, queue_name: str, *, wait: float) -> bool:
        """Wait up to ``wait`` seconds for claimable jobs; return whether there may be some."""
        return self._run(wire.wait_for_jobs(queue_name, wait))

    def renew(self, claim: Claim, extension: float) -> RenewResult:
        """Make the claim's lease expire ``extension`` seconds from now.

        Raises:
            ClaimLost: the server no longer holds the claim.
        """
        return _renewed(claim, self._run(wire.renew([(claim, extension)])))

    def renew_batch(self, items: Sequence[tuple[Claim, float]]) -> list[RenewResult]:
        """Renew several claims in one call; a lost claim is reported, not raised."""
        return self._run(wire.renew(items))

    def ack(self, claim: Claim, effects: Effects | None = None) -> list[EnqueueResult]:
        """Acknowledge the job, applying ``effects`` atomically; return the follow-ups' results.

        Retried after a timeout: the token fences it, so a repeat of one that landed fails
        with `ClaimLost` rather than applying twice.

        Raises:
            ClaimLost: the server no longer holds the claim.
        """
        return wire.ack_result(self._run(wire.settle_one(Ack(claim=claim, effects=effects))))

    def nack(
        self,
        claim: Claim,
        error: str,
        *,
        retry_after: float | None = None,
        kv_writes: Mapping[bytes, bytes] | None = None,
        effects_if_dead: Effects | None = None,
    ) -> NackResult:
        """Fail this attempt: the job retries with backoff, or is dead-lettered at its last.

        Raises:
            ClaimLost: the server no longer holds the claim.
        """
        nack = Nack(
            claim=claim,
            error=error,
            retry_after=retry_after,
            kv_writes=dict(kv_writes or {}),
            effects_if_dead=effects_if_dead,
        )
        return wire.nack_result(self._run(wire.settle_one(nack)))

    def dead_letter(
        self, claim: Claim, reason: str, *, effects: Effects | None = None
    ) -> list[EnqueueResult]:
        """Dead-letter the job now.

        Raises:
            ClaimLost: the server no longer holds the claim.
        """
        dead = DeadLetter(claim=claim, reason=reason, effects=effects)
        return wire.ack_result(self._run(wire.settle_one(dead)))

    def settle(self, settlements: Sequence[Settlement]) -> list[SettleResult]:
        """Settle several claims in one call; each applies (or fails) on its own."""
        return self._run(wire.settle(settlements))


class AsyncClient(_Base):
    """An async client of a taquba server that works under asyncio and trio alike.

    The methods are `Client`'s, awaited; see there for each one's semantics. Async methods
    take no ``timeout``: wrap a call in ``anyio.fail_after`` (or ``trio.fail_after``,
    ``asyncio.timeout``) instead.

        async with taquba_client.AsyncClient("http://127.0.0.1:8000") as client:
            result = await client.enqueue("emails", b"hello")
            job = await client.wait_for_completion(result.id)

    Args:
        base_url: The server; default: ``TAQUBA_SERVER``.
        token: The bearer token; default: ``TAQUBA_TOKEN``.
        timeout: Seconds to connect, send and wait for an answer, or an `httpx.Timeout`.
        retry: How transient failures are retried.
        transport: An httpx async transport to use instead of the network.

    Raises:
        UsageError: no URL was given and ``TAQUBA_SERVER`` is not set.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, retry)
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            headers=self._headers,
            timeout=self._timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, call: wire.Call[T]) -> T:
        attempt = 0
        ambiguous = False
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = await self._http.send(self._build(self._http, call))
            except (*_SAFE, *_AMBIGUOUS) as exc:
                ambiguous |= self._failed(call, exc, attempt)
                await anyio.sleep(self._retry.delay(attempt))
                continue
            except RuntimeError as exc:
                raise UsageError(f"the client is closed: {exc}") from exc
            answer = self._answer(call, response)
            if not isinstance(answer, ClientError):
                return answer
            if isinstance(answer, ServerUnavailable) and attempt < self._retry.attempts:
                await anyio.sleep(self._retry.delay(attempt, self._retry_after(response)))
                continue
            if (
                ambiguous
                and isinstance(answer, KvConflict)
                and call.landed_if_job is not None
                and call.landed_result is not None
                and await self._landed(call.landed_if_job)
            ):
                return call.landed_result
            raise answer

    async def _landed(self, job_id: str) -> bool:
        try:
            await self._run(wire.get_job(job_id))
        except JobNotFound:
            return False
        return True

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
        """Enqueue one job; safe to retry (see `Client.enqueue`)."""
        request = _request(
            queue_name, payload, priority, run_at, delay, dedup_key, headers, max_attempts, job_id
        )
        return await self._run(wire.enqueue(request, kv_writes, kv_expect))

    async def enqueue_batch(
        self,
        requests: Sequence[EnqueueRequest],
        *,
        kv_writes: Mapping[bytes, bytes] | None = None,
        kv_expect: Mapping[bytes, bytes | None] | None = None,
    ) -> list[EnqueueResult]:
        """Enqueue several jobs in one transaction (see `Client.enqueue_batch`)."""
        return await self._run(wire.enqueue_batch(requests, kv_writes, kv_expect))

    async def get_job(self, job_id: str) -> Job:
        """The job's current record (see `Client.get_job`)."""
        return await self._run(wire.get_job(job_id))

    async def get_job_history(self, job_id: str) -> list[JobAttempt] | None:
        """How each attempt of the job ended; None if unknown (see `Client.get_job_history`)."""
        try:
            return await self._run(wire.get_job_history(job_id))
        except JobNotFound:
            return None

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job (see `Client.cancel`)."""
        return await self._run(wire.cancel(job_id))

    async def wake_scheduled(self, job_id: str, payload: bytes | None = None) -> WakeOutcome:
        """Make a scheduled job due now (see `Client.wake_scheduled`, also for its retries)."""
        return await self._run(wire.wake_scheduled(job_id, payload))

    async def wait_for_completion(self, job_id: str) -> Job | None:
        """Wait until the job is done or dead (None: no such job); see `Client.wait_for_completion`.

        Bound the wait with ``anyio.fail_after`` (or your event loop's equivalent).
        """
        while True:
            found, finished = await self._run(wire.wait_job(job_id, WAIT_POLL))
            if finished:
                return found

    async def stats(self, queue_name: str) -> QueueStats:
        """The queue's counters."""
        return await self._run(wire.stats(queue_name))

    async def list_queues(self) -> list[str]:
        """The names of the queues."""
        return await self._run(wire.list_queues())

    async def config(self) -> ServerConfig:
        """The queue configuration the server runs with."""
        return await self._run(wire.config())

    async def health(self) -> Health:
        """The server's health."""
        return await self._run(wire.health())

    async def list_jobs(
        self,
        queue_name: str,
        status: JobStatus | str,
        *,
        cursor: bytes | None = None,
        limit: int | None = None,
    ) -> JobPage:
        """One page of the queue's jobs in ``status`` (``admin`` scope)."""
        return await self._run(wire.list_jobs(queue_name, status, cursor, limit))

    async def dead_jobs(
        self, queue_name: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Job]:
        """The dead-letter inbox (``admin`` scope)."""
        return await self._run(wire.dead_jobs(queue_name, after, limit))

    async def requeue(self, job_id: str) -> None:
        """Move a dead job back to pending (see `Client.requeue`)."""
        return await self._run(wire.requeue(job_id))

    async def purge(self, queue_name: str, status: JobStatus | str) -> int:
        """Delete the queue's ``dead`` or ``done`` jobs; return how many."""
        return await self._run(wire.purge(queue_name, status))

    async def kv_get(self, key: bytes) -> bytes | None:
        """The value of a user KV key, or None."""
        return await self._run(wire.kv_get(key))

    async def kv_put(self, key: bytes, value: bytes) -> None:
        """Write a user KV key."""
        await self._run(wire.kv_put(key, value))

    async def kv_delete(self, key: bytes) -> None:
        """Delete a user KV key."""
        await self._run(wire.kv_delete(key))

    async def kv_cas(self, key: bytes, expected: bytes | None, new: bytes | None) -> bool:
        """Compare and swap a user KV key (see `Client.kv_cas`)."""
        return await self._run(wire.kv_cas(key, expected, new))

    async def kv_scan(
        self, prefix: bytes = b"", *, cursor: bytes | None = None, limit: int | None = None
    ) -> KvPage:
        """One page of user KV entries under ``prefix``."""
        return await self._run(wire.kv_scan(prefix, cursor, limit))

    async def blob_get(self, path: str) -> bytes | None:
        """A blob of the store, or None."""
        return await self._run(wire.blob_get(path))

    async def blob_put(self, path: str, data: bytes, *, create_only: bool = False) -> bool:
        """Write a blob; return whether it was written."""
        return await self._run(wire.blob_put(path, data, create_only))

    async def blob_delete(self, path: str) -> bool:
        """Delete a blob; return whether it existed."""
        return await self._run(wire.blob_delete(path))

    async def blob_list(
        self, directory: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """The blob names under ``directory`` (relative to it), sorted."""
        return await self._run(wire.blob_list(directory, start_after, limit))

    async def claim_batch(
        self,
        queue_name: str,
        max_jobs: int = 1,
        *,
        lease: float | None = None,
        wait: float = 0.0,
    ) -> list[Claim]:
        """Claim up to ``max_jobs`` jobs, long-polling up to ``wait`` s (see `Client.claim_batch`).

        Cancelling it during the long poll closes the request; the server stops before
        claiming, or the claims it made come back after their lease.
        """
        return await self._run(wire.claim_batch(queue_name, max_jobs, lease, wait))

    async def wait_for_jobs(self, queue_name: str, *, wait: float) -> bool:
        """Wait up to ``wait`` seconds for claimable jobs."""
        return await self._run(wire.wait_for_jobs(queue_name, wait))

    async def renew(self, claim: Claim, extension: float) -> RenewResult:
        """Renew one claim's lease (see `Client.renew`)."""
        return _renewed(claim, await self._run(wire.renew([(claim, extension)])))

    async def renew_batch(self, items: Sequence[tuple[Claim, float]]) -> list[RenewResult]:
        """Renew several claims in one call; a lost claim is reported, not raised."""
        return await self._run(wire.renew(items))

    async def ack(self, claim: Claim, effects: Effects | None = None) -> list[EnqueueResult]:
        """Acknowledge the job (see `Client.ack`)."""
        return wire.ack_result(await self._run(wire.settle_one(Ack(claim=claim, effects=effects))))

    async def nack(
        self,
        claim: Claim,
        error: str,
        *,
        retry_after: float | None = None,
        kv_writes: Mapping[bytes, bytes] | None = None,
        effects_if_dead: Effects | None = None,
    ) -> NackResult:
        """Fail this attempt (see `Client.nack`)."""
        nack = Nack(
            claim=claim,
            error=error,
            retry_after=retry_after,
            kv_writes=dict(kv_writes or {}),
            effects_if_dead=effects_if_dead,
        )
        return wire.nack_result(await self._run(wire.settle_one(nack)))

    async def dead_letter(
        self, claim: Claim, reason: str, *, effects: Effects | None = None
    ) -> list[EnqueueResult]:
        """Dead-letter the job now (see `Client.dead_letter`)."""
        dead = DeadLetter(claim=claim, reason=reason, effects=effects)
        return wire.ack_result(await self._run(wire.settle_one(dead)))

    async def settle(self, settlements: Sequence[Settlement]) -> list[SettleResult]:
        """Settle several claims in one call; each applies (or fails) on its own."""
        return await self._run(wire.settle(settlements))
