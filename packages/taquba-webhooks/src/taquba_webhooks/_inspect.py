"""Reading attempt records and endpoint statistics; dead-letter inspection and replay."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import taquba

from ._errors import InvalidDelivery
from ._health import endpoint_lock, read_health
from ._records import (
    ATTEMPTS_PREFIX,
    ENDPOINTS_PREFIX,
    HEALTH_PREFIX,
    DeliveryAttempt,
    EndpointHealth,
    EndpointStats,
    attempt_key,
    decode_attempt,
    decode_health,
    decode_stats,
    encode_health,
    encode_stats,
    endpoint_key,
    health_key,
    merge_stats,
    with_health,
)
from ._request import DEFAULT_QUEUE_NAME, WebhookRequest, decode_request

__all__ = [
    "DeadDelivery",
    "dead_deliveries",
    "disable_endpoint",
    "enable_endpoint",
    "endpoint_stats",
    "get_attempt",
    "list_endpoint_stats",
    "prune_attempts",
    "replay_dead_deliveries",
    "replay_delivery",
]

log = logging.getLogger("taquba_webhooks")

_PAGE = 100
_CAS_ROUNDS = 100


@dataclass(frozen=True, slots=True)
class DeadDelivery:
    """A dead-lettered delivery: its job, what it was to send, and its last attempt."""

    job: taquba.JobRecord
    """The dead job record (``last_error`` holds a one-line summary of the failure)."""
    request: WebhookRequest | None
    """The delivery request, or None if the payload is not a readable delivery."""
    last_attempt: DeliveryAttempt | None
    """The latest attempt's record (status, response body, error), if one was kept."""

    @property
    def job_id(self) -> str:
        """The delivery's job id (pass it to `replay_delivery`)."""
        return self.job.id


async def get_attempt(queue: taquba.QueueLike, job_id: str) -> DeliveryAttempt | None:
    """The record of a delivery's latest attempt, or None.

    The record is kept while the delivery is being retried or is dead; on success it is
    deleted with the ack, unless the queue keeps done jobs (``QueueConfig.keep_done``).
    """
    raw = await queue.kv_get(attempt_key(job_id))
    return decode_attempt(raw) if raw is not None else None


async def endpoint_stats(queue: taquba.QueueLike, endpoint: str) -> EndpointStats:
    """The delivery counters and state of one endpoint (zeros, enabled, if it has none)."""
    stats = decode_stats(endpoint, await queue.kv_get(endpoint_key(endpoint)))
    return with_health(stats, await read_health(queue, endpoint))


async def list_endpoint_stats(queue: taquba.QueueLike) -> list[EndpointStats]:
    """The delivery counters and state of every endpoint, sorted by endpoint."""
    counters = {
        endpoint: decode_stats(endpoint, value)
        for endpoint, value in await _scan_endpoints(queue, ENDPOINTS_PREFIX)
    }
    health = {
        endpoint: decode_health(value)
        for endpoint, value in await _scan_endpoints(queue, HEALTH_PREFIX)
    }
    return [
        with_health(counters.get(endpoint, EndpointStats(endpoint)), health.get(endpoint, _HEALTHY))
        for endpoint in sorted(counters.keys() | health.keys())
    ]


_HEALTHY = EndpointHealth()


async def _scan_endpoints(queue: taquba.QueueLike, prefix: bytes) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    cursor: bytes | None = None
    while True:
        page = await queue.kv_scan(prefix, cursor=cursor, limit=_PAGE)
        found.extend(
            (key[len(prefix) :].decode("utf-8", errors="replace"), value)
            for key, value in page.entries
        )
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


async def disable_endpoint(
    queue: taquba.Queue, endpoint: str, reason: str = "disabled by an operator"
) -> bool:
    """Disable an endpoint: its deliveries are dead-lettered without a request until enabled.

    The workers that track endpoint health (``disable_after`` or ``disable_on_gone``) check
    the state before each attempt; other workers ignore it. An endpoint already disabled keeps
    its first reason and time.

    Takes a `taquba.Queue`, not any `taquba.QueueLike`: the health record is written blind
    under an in-process lock that the owner's workers share, so it runs in the process that
    owns the store.

    Returns:
        Whether the endpoint was enabled until now.
    """
    async with endpoint_lock(queue, endpoint):
        key = health_key(endpoint)
        raw = await queue.kv_get(key)
        current = decode_health(raw)
        if current.disabled:
            return False
        disabled = EndpointHealth(current.consecutive_failures, queue.clock.now_ms(), reason)
        await queue.kv_put(key, encode_health(disabled))
        return True


async def enable_endpoint(queue: taquba.Queue, endpoint: str) -> bool:
    """Enable an endpoint again and reset its consecutive failures.

    Deliveries dead-lettered while it was disabled stay dead: send them again with
    ``replay_dead_deliveries(queue, endpoint=endpoint)``.

    Takes a `taquba.Queue`, like `disable_endpoint` (and for the same reason).

    Returns:
        Whether the endpoint was disabled until now.
    """
    async with endpoint_lock(queue, endpoint):
        key = health_key(endpoint)
        raw = await queue.kv_get(key)
        if raw is None:
            return False
        await queue.kv_delete(key)
        return decode_health(raw).disabled


async def add_endpoint_stats(queue: taquba.QueueLike, delta: EndpointStats) -> None:
    """Add ``delta`` to an endpoint's stored counters (library-internal).

    A compare-and-set loop: read, add, write only if the value is still the one read, else
    start over. Each call is one atomic read-modify-write, so concurrent writers (other
    workers of the process) never lose each other's increments.
    """
    key = endpoint_key(delta.endpoint)
    for _ in range(_CAS_ROUNDS):
        raw = await queue.kv_get(key)
        updated = merge_stats(decode_stats(delta.endpoint, raw), delta)
        if await queue.kv_compare_and_set(key, raw, encode_stats(updated)):
            return
    log.warning("gave up updating the statistics of %s under contention", delta.endpoint)


async def dead_deliveries(
    queue: taquba.QueueLike,
    queue_name: str = DEFAULT_QUEUE_NAME,
    *,
    after: str | None = None,
    limit: int = 100,
) -> list[DeadDelivery]:
    """Dead-lettered deliveries of ``queue_name`` in job-id order, after the job id ``after``."""
    jobs = await queue.dead_jobs(queue_name, after=after, limit=limit)
    found: list[DeadDelivery] = []
    for job in jobs:
        try:
            request: WebhookRequest | None = decode_request(job.payload, job_id=job.id)
        except InvalidDelivery:
            request = None
        found.append(DeadDelivery(job, request, await get_attempt(queue, job.id)))
    return found


async def replay_delivery(queue: taquba.QueueLike, job_id: str) -> None:
    """Send a dead-lettered delivery again: it becomes pending with its attempts reset.

    The ``webhook-id`` stays the same, so receivers that already processed it can drop it.

    Raises:
        taquba.JobNotFound: no such job, or its dead record was swept.
        taquba.InvalidState: the job is not dead.
    """
    job = await queue.get_job(job_id)
    if job is None:
        raise taquba.JobNotFound(job_id)
    await queue.requeue_dead_job(job)


async def replay_dead_deliveries(
    queue: taquba.QueueLike, queue_name: str = DEFAULT_QUEUE_NAME, *, endpoint: str | None = None
) -> int:
    """Replay every dead delivery of ``queue_name`` (of one endpoint if given); return how many.

    Deliveries whose payload is unreadable are left dead.
    """
    replayed = 0
    after: str | None = None
    while True:
        page = await dead_deliveries(queue, queue_name, after=after, limit=_PAGE)
        for dead in page:
            if dead.request is None:
                continue
            if endpoint is not None and dead.request.endpoint_key != endpoint:
                continue
            try:
                await queue.requeue_dead_job(dead.job)
            except taquba.JobNotFound:
                continue
            replayed += 1
        if len(page) < _PAGE:
            return replayed
        after = page[-1].job.id


async def prune_attempts(queue: taquba.QueueLike) -> int:
    """Delete attempt records whose job no longer exists; return how many were deleted.

    Records outlive their jobs when dead (or kept done) jobs are swept by retention. Each
    deletion is a compare-and-set against the value read, so a record rewritten meanwhile is
    kept. `WebhookWorker.serve` runs this periodically.
    """
    deleted = 0
    cursor: bytes | None = None
    while True:
        page = await queue.kv_scan(ATTEMPTS_PREFIX, cursor=cursor, limit=_PAGE)
        for key, value in page.entries:
            job_id = key[len(ATTEMPTS_PREFIX) :].decode("ascii", errors="replace")
            try:
                job = await queue.get_job(job_id)
            except taquba.UsageError:
                job = None
            if job is None and await queue.kv_compare_and_set(key, value, None):
                deleted += 1
        if page.next_cursor is None:
            return deleted
        cursor = page.next_cursor
