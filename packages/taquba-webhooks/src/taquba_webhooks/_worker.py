"""The delivery worker: claim webhook jobs, send them over HTTP, settle by the outcome."""

from __future__ import annotations

import importlib.metadata
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeAlias

import httpx
import trio

import taquba

from ._classify import (
    DISABLING_STATUSES,
    MAX_RETRY_AFTER,
    Classification,
    classify_status,
    parse_retry_after,
)
from ._errors import DestinationRefused, InvalidDelivery, InvalidSecret
from ._guard import DestinationPolicy, GuardedTransport
from ._health import endpoint_lock, health_after, read_health
from ._inspect import add_endpoint_stats, prune_attempts
from ._records import (
    AttemptOutcome,
    DeliveryAttempt,
    EndpointHealth,
    EndpointStats,
    attempt_key,
    encode_attempt,
    encode_health,
    health_key,
    merge_stats,
)
from ._request import DEFAULT_QUEUE_NAME, DEFAULT_TIMEOUT, WebhookRequest, decode_request
from ._signing import Secret, secret_key, signature_headers

if TYPE_CHECKING:
    import ssl

__all__ = ["RESPONSE_BODY_LIMIT", "WebhookWorker"]

log = logging.getLogger("taquba_webhooks")

RESPONSE_BODY_LIMIT = 1024
"""Default number of response-body bytes kept on a delivery's attempt record."""

_FATAL = (taquba.Fenced, taquba.QueueClosed, taquba.StorageFatal)
_SHUTDOWN_NACK_GRACE = 10.0
_FLUSH_GRACE = 10.0
_CLOSE_GRACE = 5.0
_SUMMARY_BODY = 200
_DRAIN_LIMIT = 64 * 1024
_RETRY_BASE = 0.1
_RETRY_CAP = 30.0
_LOG_EVERY = 30.0

_Wait: TypeAlias = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Result:
    """The outcome of one attempt before settlement."""

    kind: Classification
    status: int | None = None
    body: bytes = b""
    truncated: bool = False
    error: str | None = None
    retry_after: float | None = None
    location: str | None = None
    cancelled: bool = False
    from_endpoint: bool = False
    """The endpoint's own answer (or silence): it counts towards the endpoint's health."""
    skipped: bool = False
    """Not attempted: the endpoint is disabled."""

    @property
    def gone(self) -> bool:
        """The receiver asked to stop sending to the endpoint (`DISABLING_STATUSES`)."""
        return self.status in DISABLING_STATUSES

    def summary(self) -> str:
        """A one-line description for the job's ``last_error``."""
        if self.status is not None:
            text = f"HTTP {self.status}"
            if self.gone:
                text += " Gone (the receiver asks to stop sending to this endpoint)"
            if self.location is not None:
                text += f" (redirect to {self.location} not followed)"
            snippet = " ".join(self.body[:_SUMMARY_BODY].decode("utf-8", "replace").split())
            if snippet:
                text += f": {snippet}"
        else:
            text = self.error or self.kind.value
        if self.retry_after is not None:
            text += f" (Retry-After {self.retry_after:g} s)"
        return text


def _failure(kind: Classification, error: str) -> _Result:
    return _Result(kind=kind, error=error)


class _StatsRecorder:
    """Coalesces counter increments and applies them with compare-and-set writes.

    The task that records first while no flush runs becomes the flusher and applies every
    increment pending (including those recorded while it writes) before returning; other
    tasks just add to the pending batch. So the number of KV writes per endpoint follows the
    storage latency, not the delivery rate.
    """

    def __init__(self, queue: taquba.Queue) -> None:
        self._queue = queue
        self._pending: dict[str, EndpointStats] = {}
        self._flushing = False

    async def record(
        self, endpoint: str, outcome: AttemptOutcome, at: int, status: int | None
    ) -> None:
        delta = EndpointStats(
            endpoint,
            delivered=int(outcome is AttemptOutcome.DELIVERED),
            retried=int(outcome is AttemptOutcome.RETRY),
            dead=int(outcome is AttemptOutcome.DEAD),
            last_attempt_at=at,
            last_delivered_at=at if outcome is AttemptOutcome.DELIVERED else None,
            last_failed_at=None if outcome is AttemptOutcome.DELIVERED else at,
            last_status=status,
        )
        current = self._pending.get(endpoint)
        self._pending[endpoint] = delta if current is None else merge_stats(current, delta)
        await self.flush()

    async def flush(self) -> None:
        if self._flushing:
            await trio.lowlevel.checkpoint()
            return
        self._flushing = True
        try:
            while self._pending:
                endpoint, delta = next(iter(self._pending.items()))
                del self._pending[endpoint]
                # A write that fails or is cancelled may or may not have landed; its counts
                # are dropped rather than retried, so counters never over-count.
                try:
                    await add_endpoint_stats(self._queue, delta)
                except taquba.TaqubaError as exc:
                    log.warning("could not update the statistics of %s: %s", endpoint, exc)
        finally:
            self._flushing = False


class WebhookWorker:
    """Delivers the webhook jobs of one queue name over HTTP.

    The family convention (see "Conventions" in the design docs): build it with its queue and
    options, start it with ``await nursery.start(worker.serve)``, stop it gracefully with
    `shutdown`, or hard-stop it by cancelling the scope around `serve`::

        worker = taquba_webhooks.WebhookWorker(queue, secrets={"acme": [secret]})
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            ...
            worker.shutdown()

    It claims jobs in batches sized to its free slots (``concurrency``) and runs each delivery
    in its own task. Each attempt resolves the destination and applies the SSRF guard
    (``policy``), extends the job's lease to cover the attempt's timeout, signs the request
    when it names a signing key, sends it with redirects off unless ``follow_redirects``, and
    settles the job:

    - 2xx: acknowledged.
    - 408, 425, 429, 5xx, timeouts and connection errors: retried with the queue's backoff, or
      after the receiver's ``Retry-After`` if that is longer (capped at ``max_retry_after``);
      dead-lettered once the job's attempts run out.
    - any other 3xx or 4xx, a refused destination, an unknown signing key, an unreadable
      payload: dead-lettered at once (fix the cause, then `replay_delivery`). 410 Gone
      (`DISABLING_STATUSES`) says so in the reason: the receiver asks to stop sending.
    - a job cancelled with `taquba.Queue.cancel` is abandoned and dead-lettered.

    Endpoint health is tracked when ``disable_after`` is set or ``disable_on_gone`` is true:
    each attempt's outcome updates the endpoint's consecutive failures in the transaction that
    settles it, a 410 (with ``disable_on_gone``) or the ``disable_after``-th failure in a row
    disables the endpoint and dead-letters that delivery at once, and deliveries to a disabled
    endpoint are dead-lettered without a request ("endpoint disabled: <why>"). The state shows
    in `endpoint_stats`; `enable_endpoint` turns the endpoint back on.

    Args:
        queue: the open queue. A `taquba.Queue`, not any `taquba.QueueLike`: a worker that
            tracks endpoint health writes the health record blind under an in-process lock,
            which serialises its writers only inside the process that owns the store. Enqueue
            deliveries (`enqueue_webhook`) and inspect them from any process.
        queue_name: which queue name to serve.
        concurrency: the most deliveries in flight at once.
        shutdown_grace: after `shutdown`, seconds the deliveries in flight get to finish
            before they are cancelled and handed back with a nack. None (the default) or
            ``math.inf``: wait as long as they take.
        poll_interval: the longest idle wait between claim attempts, in seconds (an enqueue
            on the same `taquba.Queue` wakes an idle worker at once).
        prune_interval: seconds between `prune_attempts` runs while serving (None: never).
        secrets: signing secrets by key name; a request's ``signing_key`` picks one entry.
            An entry is one secret or several (all active during a rotation: every one signs,
            and the receiver accepts any). Secrets never enter the queue.
        policy: the SSRF guard (default: only globally routable addresses).
        follow_redirects: follow 3xx responses (each hop is SSRF-checked again).
        max_redirects: the most redirects followed per attempt.
        default_timeout: seconds an attempt may take when its request sets no ``timeout``.
        max_retry_after: cap (seconds) on a receiver's ``Retry-After``.
        response_body_limit: response-body bytes kept on the attempt record.
        user_agent: the ``user-agent`` header unless a request sets one.
        ssl_context: TLS settings for https (default: httpx's, with certifi's CAs).
        max_connections: the most simultaneous HTTP connections.
        disable_after: disable an endpoint after this many failed attempts in a row (any
            failure the endpoint caused: non-2xx, timeout, connection error, refused
            destination); None: never.
        disable_on_gone: disable an endpoint that answers 410 Gone, as Standard Webhooks
            asks. None (the default): when ``disable_after`` is set.

    Raises:
        taquba.InvalidArgument: an option is of the wrong type or out of range (checked
            here, before anything runs); ``queue`` is not a `taquba.Queue`.
        taquba.InvalidQueueName: ``queue_name`` is not a usable queue name.
        InvalidSecret: a secret is malformed.
    """

    def __init__(
        self,
        queue: taquba.Queue,
        *,
        queue_name: str = DEFAULT_QUEUE_NAME,
        concurrency: int = 8,
        shutdown_grace: float | None = None,
        poll_interval: float = 1.0,
        prune_interval: float | None = 3600.0,
        secrets: Mapping[str, Secret | Sequence[Secret]] | None = None,
        policy: DestinationPolicy | None = None,
        follow_redirects: bool = False,
        max_redirects: int = 5,
        default_timeout: float = DEFAULT_TIMEOUT,
        max_retry_after: float = MAX_RETRY_AFTER,
        response_body_limit: int = RESPONSE_BODY_LIMIT,
        user_agent: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        disable_after: int | None = None,
        disable_on_gone: bool | None = None,
    ) -> None:
        """Check the options and build the worker; nothing runs until `serve`."""
        if not isinstance(queue, taquba.Queue):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise taquba.InvalidArgument("queue", queue, "must be an open taquba.Queue")
        keyring: dict[str, tuple[Secret, ...]] = {}
        for name, value in (secrets or {}).items():
            entries: tuple[Secret, ...] = (
                (value,) if isinstance(value, str | bytes) else tuple(value)
            )
            if not entries:
                raise InvalidSecret(f"signing key {name!r} has no secret")
            for entry in entries:
                secret_key(entry)
            keyring[name] = entries
        if disable_after is not None:
            _check_int("disable_after", disable_after, low=1)
        self._queue = queue
        self._queue_name = taquba.validate_queue_name(queue_name)
        self._concurrency = _check_int("concurrency", concurrency, low=1)
        grace = (
            None
            if shutdown_grace is None
            else _check_seconds("shutdown_grace", shutdown_grace, allow_inf=True)
        )
        self._grace = None if grace is None or math.isinf(grace) else grace
        self._poll_interval = _check_seconds("poll_interval", poll_interval, positive=True)
        self._prune_interval = (
            None
            if prune_interval is None
            else _check_seconds("prune_interval", prune_interval, positive=True)
        )
        self._secrets = keyring
        self._policy = policy or DestinationPolicy()
        self._follow_redirects = follow_redirects
        self._max_redirects = _check_int("max_redirects", max_redirects, low=0)
        self._default_timeout = _check_seconds("default_timeout", default_timeout, positive=True)
        self._max_retry_after = _check_seconds("max_retry_after", max_retry_after)
        self._body_limit = _check_int("response_body_limit", response_body_limit, low=0)
        self._user_agent = user_agent or f"taquba-webhooks/{_version()}"
        self._ssl_context = ssl_context
        self._max_connections = _check_int("max_connections", max_connections, low=1)
        self._disable_after = disable_after
        self._disable_on_gone = (
            disable_after is not None if disable_on_gone is None else disable_on_gone
        )
        self._track_health = disable_after is not None or self._disable_on_gone
        self._stop = trio.Event()
        self._serving = False

    @property
    def queue_name(self) -> str:
        """The queue name this worker serves."""
        return self._queue_name

    @property
    def concurrency(self) -> int:
        """The most deliveries in flight at once."""
        return self._concurrency

    @property
    def policy(self) -> DestinationPolicy:
        """The SSRF guard this worker applies."""
        return self._policy

    @property
    def disable_after(self) -> int | None:
        """Failed attempts in a row that disable an endpoint (None: never)."""
        return self._disable_after

    @property
    def disable_on_gone(self) -> bool:
        """Whether a 410 Gone response disables its endpoint."""
        return self._disable_on_gone

    @property
    def shutting_down(self) -> bool:
        """Whether `shutdown` has been called."""
        return self._stop.is_set()

    def _client(self) -> httpx.AsyncClient:
        transport = GuardedTransport(
            self._policy, ssl_context=self._ssl_context, max_connections=self._max_connections
        )
        return httpx.AsyncClient(
            transport=transport,
            follow_redirects=self._follow_redirects,
            max_redirects=self._max_redirects,
            trust_env=False,  # no proxies from the environment: they would bypass the guard
            timeout=self._default_timeout,
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver the jobs of `queue_name` until `shutdown` is called or the scope is cancelled.

        Reports readiness through ``task_status`` (for ``nursery.start``) before the first
        claim; from then on it claims and delivers, and prunes orphaned attempt records every
        ``prune_interval``. After `shutdown` it stops claiming, lets the deliveries in flight
        finish within ``shutdown_grace`` (those still running then are cancelled and handed
        back with a nack) and returns. Cancelling the surrounding scope is the hard stop:
        deliveries in flight are cancelled and handed back the same way, and `serve` raises
        `trio.Cancelled`. A worker that has been shut down returns at once when served again.

        Returns:
            None, after a graceful shutdown.

        Error handling: a failed delivery is never an exception here: it becomes a retry or
        a dead-letter whose reason names the failure. A transient error on the claim path
        (`taquba.StorageUnavailable`) is retried with capped exponential backoff and jitter,
        logged as a warning at most every 30 s. A settlement that fails (including
        `taquba.ClaimLost`) is logged and the loop goes on: the job's lease expires and the
        reaper requeues it. Any other error cancels the deliveries in flight and is raised as
        itself, not inside an exception group: `taquba.Fenced`, `taquba.QueueClosed`,
        `taquba.StorageFatal`, or a permanent `taquba.StorageError` such as
        `taquba.StorageMisconfigured`.

        Raises:
            taquba.UsageError: this worker is already serving (one `serve` at a time).
        """
        if self._serving:
            raise taquba.UsageError(
                "this WebhookWorker is already serving; build one WebhookWorker per loop"
            )
        self._serving = True
        try:
            await self._serve(task_status)
        finally:
            self._serving = False

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        if self._stop.is_set():
            task_status.started()
            return
        fatal: list[taquba.TaqubaError] = []
        async with self._client() as client:
            run = _Run(self, self._queue, client)
            try:
                async with trio.open_nursery() as background:
                    if self._prune_interval is not None:
                        background.start_soon(run.prune_forever, self._prune_interval)
                    try:
                        await run.loop(
                            self._queue_name,
                            self._concurrency,
                            self._poll_interval,
                            self._stop,
                            self._grace,
                            task_status,
                        )
                    except taquba.TaqubaError as exc:
                        fatal.append(exc)
                    background.cancel_scope.cancel()
            finally:
                with trio.move_on_after(_FLUSH_GRACE, shield=True):
                    await run.stats.flush()
        if fatal:
            raise fatal[0]

    def shutdown(self) -> None:
        """Stop claiming; `serve` returns once the deliveries in flight are done.

        See ``shutdown_grace`` for how long they get. Idempotent and sticky: safe to call
        before `serve` starts (it then returns at once), from any task of the same trio run
        (from another thread, use ``trio.from_thread.run_sync(worker.shutdown)``).
        """
        self._stop.set()

    def __repr__(self) -> str:
        return (
            f"<taquba_webhooks.WebhookWorker {self._queue_name!r} concurrency={self._concurrency}>"
        )


def _check_int(name: str, value: object, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise taquba.InvalidArgument(name, value, f"must be an int >= {low}")
    return value


def _check_seconds(
    name: str, value: object, *, positive: bool = False, allow_inf: bool = False
) -> float:
    valid = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not math.isnan(value)
        and (allow_inf or not math.isinf(value))
        and (value > 0 if positive else value >= 0)
    )
    if not valid:
        kind = "positive" if positive else "non-negative"
        finite = "" if allow_inf else "finite "
        raise taquba.InvalidArgument(name, value, f"must be a {kind} {finite}number of seconds")
    return float(value)  # pyright: ignore[reportArgumentType]


def _version() -> str:
    return importlib.metadata.version("taquba-webhooks")


class _Retrying:
    """Backoff for the claim loop while storage fails transiently; logs quietly.

    Capped exponential backoff with equal jitter (the core's worker loops do the same); the
    first failure of a run is logged as a warning, then at most once per `_LOG_EVERY` seconds,
    and the recovery is logged.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self._logged_at = -math.inf

    def failed(self, error: taquba.TaqubaError) -> float:
        """Note a failure; return the seconds to wait before trying again."""
        self.failures += 1
        now = trio.current_time()
        if self.failures == 1 or now - self._logged_at >= _LOG_EVERY:
            self._logged_at = now
            log.warning(
                "%s failed %d times in a row, retrying: %s", self.name, self.failures, error
            )
        exponent = min(self.failures - 1, 16)
        return min(_RETRY_CAP, _RETRY_BASE * 2.0**exponent) * (0.5 + random.random() / 2)

    def succeeded(self) -> None:
        """Note a success, ending the run of failures."""
        if self.failures:
            log.info("%s recovered after %d failed attempts", self.name, self.failures)
            self.failures = 0


class _Run:
    """One `WebhookWorker.serve` call: its queue, HTTP client and statistics."""

    def __init__(
        self, worker: WebhookWorker, queue: taquba.Queue, client: httpx.AsyncClient
    ) -> None:
        self.worker = worker
        self.queue = queue
        self.client = client
        self.stats = _StatsRecorder(queue)

    async def prune_forever(self, interval: float) -> None:
        while True:
            try:
                pruned = await prune_attempts(self.queue)
            except _FATAL:
                return
            except taquba.TaqubaError as exc:
                log.warning("pruning attempt records failed: %s", exc)
            else:
                if pruned:
                    log.info("pruned %d attempt records of deleted jobs", pruned)
            await trio.sleep(interval)

    async def loop(
        self,
        queue_name: str,
        concurrency: int,
        poll_interval: float,
        stop: trio.Event,
        shutdown_grace: float | None,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Claim and deliver until ``stop``; raise a fatal queue error as itself."""
        queue = self.queue
        in_flight = 0
        slot_freed = trio.Event()
        fatal: list[taquba.TaqubaError] = []
        claiming = _Retrying(f"webhook worker {queue_name!r}")
        async with trio.open_nursery() as jobs:

            async def run_one(claim: taquba.Claim) -> None:
                nonlocal in_flight, slot_freed
                try:
                    await self.process(claim)
                except _FATAL as exc:
                    fatal.append(exc)
                    jobs.cancel_scope.cancel()
                finally:
                    in_flight -= 1
                    slot_freed.set()
                    slot_freed = trio.Event()

            task_status.started()
            try:
                while not stop.is_set() and not fatal:
                    free = concurrency - in_flight
                    if free == 0:
                        await _first_of(slot_freed.wait, stop.wait, queue.wait_stopped)
                        if queue.failure is not None:
                            raise queue.failure  # caught below: cancels the deliveries
                        continue
                    try:
                        claims = await queue.claim_batch(queue_name, free)
                    except taquba.TaqubaError as exc:
                        if not exc.transient:
                            raise
                        delay = claiming.failed(exc)
                        with trio.move_on_after(delay):
                            await _first_of(stop.wait, queue.wait_stopped)
                        continue
                    claiming.succeeded()
                    for claim in claims:
                        in_flight += 1
                        jobs.start_soon(run_one, claim)
                    if not claims:
                        with trio.move_on_after(poll_interval):
                            await _first_of(lambda: queue.wait_for_jobs_on(queue_name), stop.wait)
            except taquba.TaqubaError as exc:
                fatal.append(exc)
                jobs.cancel_scope.cancel()
            if shutdown_grace is not None and not fatal:
                jobs.cancel_scope.deadline = trio.current_time() + shutdown_grace
        if fatal:
            raise fatal[0]

    async def process(self, claim: taquba.Claim) -> None:
        """Attempt one delivery and settle it. Only fatal queue errors escape."""
        queue = self.queue
        started_ms = queue.clock.now_ms()
        started = trio.current_time()
        request: WebhookRequest | None = None
        health: EndpointHealth | None = None
        try:
            try:
                request = decode_request(claim.payload, job_id=claim.id)
            except InvalidDelivery as exc:
                result = _failure(Classification.PERMANENT, f"invalid delivery: {exc}")
            else:
                if self.worker._track_health:  # pyright: ignore[reportPrivateUsage]
                    health = await read_health(queue, request.endpoint_key)
                try:
                    if health is not None and health.disabled:
                        result = _Result(
                            kind=Classification.PERMANENT,
                            error=f"endpoint disabled: {health.disabled_reason}",
                            skipped=True,
                        )
                    else:
                        result = await self.attempt(claim, request)
                except taquba.TaqubaError:
                    raise
                except Exception as exc:  # a bug or an unmapped library error: retry later
                    log.exception("delivery %s/%s failed unexpectedly", claim.queue_name, claim.id)
                    result = _failure(Classification.RETRY, f"unexpected error: {_describe(exc)}")
                except BaseException:
                    with trio.move_on_after(_SHUTDOWN_NACK_GRACE, shield=True):
                        try:
                            await queue.nack(
                                claim, "the worker stopped before the delivery finished"
                            )
                        except taquba.TaqubaError as exc:
                            log.warning("could not hand back %s: %s", claim.id, exc)
                    raise
            duration = math.ceil((trio.current_time() - started) * 1000)
            await self.settle(claim, request, result, started_ms, duration, health)
        except taquba.ClaimLost as exc:
            log.warning(
                "lost the claim on %s/%s before settling it (%s); it will be delivered again",
                claim.queue_name,
                claim.id,
                exc,
            )
        except _FATAL:
            raise
        except taquba.TaqubaError as exc:
            log.error("could not settle %s/%s: %s", claim.queue_name, claim.id, exc)

    async def attempt(self, claim: taquba.Claim, request: WebhookRequest) -> _Result:
        """Send one attempt of ``request``; classify what happened."""
        worker = self.worker
        secrets: tuple[Secret, ...] | None = None
        if request.signing_key is not None:
            secrets = worker._secrets.get(request.signing_key)  # pyright: ignore[reportPrivateUsage]
            if secrets is None:
                return _failure(
                    Classification.PERMANENT,
                    f"signing key {request.signing_key!r} is not configured on this worker",
                )
        if claim.cancel_requested:
            return _Result(kind=Classification.PERMANENT, error="cancelled", cancelled=True)
        timeout = request.timeout or worker._default_timeout  # pyright: ignore[reportPrivateUsage]
        # Hold the lease for the whole attempt (plus a settlement margin) before sending.
        taquba.LeaseHandle(self.queue, claim).ensure_at_least(timeout)
        headers: dict[str, str] = {}
        if not any(name.lower() == "user-agent" for name in request.headers):
            headers["user-agent"] = worker._user_agent  # pyright: ignore[reportPrivateUsage]
        headers.update(request.headers)
        webhook_id = request.id or claim.id
        timestamp = self.queue.clock.now_ms() // 1000
        if secrets is not None:
            headers.update(signature_headers(secrets, webhook_id, timestamp, request.body))
        else:
            headers["webhook-id"] = webhook_id
            headers["webhook-timestamp"] = str(timestamp)

        exchange = trio.CancelScope()
        result: _Result | None = None
        async with trio.open_nursery() as nursery:

            async def watch_cancel() -> None:
                await claim.wait_cancel_requested()
                exchange.cancel()

            nursery.start_soon(watch_cancel)
            with exchange:
                result = replace(await self.exchange(request, headers, timeout), from_endpoint=True)
            nursery.cancel_scope.cancel()
        if result is None:
            return _Result(
                kind=Classification.PERMANENT, error="cancelled while delivering", cancelled=True
            )
        return result

    async def exchange(
        self, request: WebhookRequest, headers: dict[str, str], seconds: float
    ) -> _Result:
        """The HTTP exchange, bounded by ``seconds`` in all. Never raises but Cancelled."""
        worker = self.worker
        timeout = seconds
        deadline = trio.current_time() + timeout
        try:
            response: httpx.Response | None = None
            with trio.CancelScope(deadline=deadline):
                outgoing = self.client.build_request(
                    request.method,
                    request.url,
                    content=request.body,
                    headers=headers,
                    timeout=httpx.Timeout(timeout),
                )
                response = await self.client.send(outgoing, stream=True)
            if response is None:
                return _failure(Classification.RETRY, f"timed out after {timeout:g} s")
            body = bytearray()
            truncated = False
            try:
                with trio.CancelScope(deadline=deadline):
                    truncated = await _read_limited(response, body, worker._body_limit)  # pyright: ignore[reportPrivateUsage]
            except httpx.HTTPError:
                pass  # the status is what counts; keep what was read
            finally:
                with trio.move_on_after(_CLOSE_GRACE, shield=True):
                    await response.aclose()
        except DestinationRefused as exc:
            return _failure(Classification.PERMANENT, str(exc))
        except httpx.TooManyRedirects as exc:
            return _failure(Classification.PERMANENT, f"too many redirects: {exc}")
        except httpx.UnsupportedProtocol as exc:
            return _failure(Classification.PERMANENT, f"unsupported protocol: {exc}")
        except httpx.TimeoutException:
            return _failure(Classification.RETRY, f"timed out after {timeout:g} s")
        except httpx.TransportError as exc:
            return _failure(Classification.RETRY, f"connection failed: {_describe(exc)}")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return _failure(Classification.PERMANENT, f"request failed: {_describe(exc)}")
        status = response.status_code
        kind = classify_status(status)
        retry_after = None
        if kind is Classification.RETRY:
            retry_after = parse_retry_after(
                response.headers.get("retry-after"),
                now=self.queue.clock.now_ms() / 1000,
                cap=worker._max_retry_after,  # pyright: ignore[reportPrivateUsage]
            )
        location = response.headers.get("location") if 300 <= status <= 399 else None
        return _Result(
            kind=kind,
            status=status,
            body=bytes(body),
            truncated=truncated,
            error=None if kind is Classification.DELIVERED else f"HTTP {status}",
            retry_after=retry_after,
            location=location,
        )

    async def settle(
        self,
        claim: taquba.Claim,
        request: WebhookRequest | None,
        result: _Result,
        started_ms: int,
        duration_ms: int,
        health: EndpointHealth | None,
    ) -> None:
        """Record the attempt, settle the job, then count it in the endpoint's statistics.

        ``health`` is the endpoint's health record read before the attempt, or None when the
        worker does not track health. The health record changes in the settlement's
        transaction, under the endpoint's lock (`endpoint_lock`).
        """
        endpoint = request.endpoint_key if request is not None else ""
        unchanged = health is None or not result.from_endpoint
        if health is not None and result.kind is Classification.DELIVERED:
            unchanged = unchanged or health.consecutive_failures == 0  # the common case
        if unchanged:
            outcome = await self.commit(claim, request, result, started_ms, duration_ms, None)
        else:
            async with endpoint_lock(self.queue, endpoint):
                current = await read_health(self.queue, endpoint)
                worker = self.worker
                updated = health_after(
                    current,
                    failed=result.kind is not Classification.DELIVERED,
                    gone=result.gone,
                    at=started_ms,
                    summary=result.summary(),
                    disable_after=worker._disable_after,  # pyright: ignore[reportPrivateUsage]
                    disable_on_gone=worker._disable_on_gone,  # pyright: ignore[reportPrivateUsage]
                )
                change = (current, updated) if updated != current else None
                outcome = await self.commit(claim, request, result, started_ms, duration_ms, change)
        taquba.count_event(self.queue, "webhook_deliveries", {"outcome": outcome.value})
        if request is not None and not result.cancelled and not result.skipped:
            await self.stats.record(endpoint, outcome, started_ms, result.status)

    def outcome(self, claim: taquba.Claim, result: _Result) -> AttemptOutcome:
        """How ``result`` settles the job."""
        if result.kind is Classification.DELIVERED:
            return AttemptOutcome.DELIVERED
        if result.kind is Classification.RETRY and claim.attempts < claim.job.max_attempts:
            return AttemptOutcome.RETRY
        return AttemptOutcome.DEAD

    async def commit(
        self,
        claim: taquba.Claim,
        request: WebhookRequest | None,
        result: _Result,
        started_ms: int,
        duration_ms: int,
        health: tuple[EndpointHealth, EndpointHealth] | None,
    ) -> AttemptOutcome:
        """Settle the job, with its attempt record and the health change (before, after)."""
        queue = self.queue
        disabling = health is not None and health[1].disabled and not health[0].disabled
        outcome = self.outcome(claim, result)
        summary = result.summary()
        if disabling and outcome is AttemptOutcome.RETRY:
            outcome = AttemptOutcome.DEAD  # the endpoint is disabled: do not retry
        if outcome is AttemptOutcome.DEAD and result.kind is Classification.RETRY:
            if disabling:
                summary = f"gave up, the endpoint is now disabled: {summary}"
            else:
                summary = f"gave up after {claim.attempts} attempts: {summary}"
        elif disabling:
            summary = f"{summary}; the endpoint is now disabled"
        record = DeliveryAttempt(
            job_id=claim.id,
            webhook_id=(request.id or claim.id) if request is not None else claim.id,
            attempt=claim.attempts,
            at=started_ms,
            duration_ms=duration_ms,
            url=request.url if request is not None else "",
            endpoint=request.endpoint_key if request is not None else "",
            outcome=outcome,
            status=result.status,
            response_body=result.body,
            response_truncated=result.truncated,
            error=None if outcome is AttemptOutcome.DELIVERED else summary,
            retry_after=result.retry_after,
        )
        key = attempt_key(claim.id)
        writes: dict[bytes, bytes] = {}
        if health is not None and request is not None:
            writes[health_key(request.endpoint_key)] = encode_health(health[1])
        if outcome is AttemptOutcome.DELIVERED:
            deletes: list[bytes] = []
            if queue.config(claim.queue_name).keep_done is not None:
                writes[key] = encode_attempt(record)
            else:
                deletes.append(key)
            await queue.ack_with(claim, taquba.Effects(kv_writes=writes, kv_deletes=deletes))
            return outcome
        # The record commits with the settlement, so a worker that lost its claim (its
        # lease expired and another worker took the delivery) cannot overwrite the record
        # of the newer attempt.
        writes[key] = encode_attempt(record)
        if result.kind is Classification.RETRY and not disabling:
            # Past max_attempts the queue dead-letters the job itself.
            await queue.nack(claim, summary, retry_after=result.retry_after, kv_writes=writes)
        else:
            await queue.dead_letter(claim, summary, effects=taquba.Effects(kv_writes=writes))
        return outcome


async def _read_limited(response: httpx.Response, into: bytearray, limit: int) -> bool:
    """Read the body, keeping its first ``limit`` bytes in ``into``; return whether it was longer.

    Small bodies are read to the end so the connection can be reused. A body past
    `_DRAIN_LIMIT` is abandoned by cancelling the read, which unwinds httpx's nested async
    generators cleanly (breaking out of them would leave them to the garbage collector).
    """
    truncated = False
    seen = 0
    with trio.CancelScope() as scope:
        async for chunk in response.aiter_bytes():
            seen += len(chunk)
            room = limit - len(into)
            if room > 0:
                into += chunk[:room]
            truncated |= len(chunk) > room
            if seen > _DRAIN_LIMIT:
                scope.cancel()
    return truncated


def _describe(exc: BaseException) -> str:
    """``Type: message``, taking the message from the first cause that has one."""
    text = ""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and not text and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        current = current.__cause__ or current.__context__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _first_of(*waits: _Wait) -> None:
    """Return as soon as any of the waits returns.

    A queue error from a wait (`taquba.QueueClosed` from `taquba.Queue.wait_for_jobs_on`) is
    raised as itself, not inside an exception group: the nursery is an implementation detail.
    """
    failure: taquba.TaqubaError | None = None
    async with trio.open_nursery() as nursery:

        async def run(wait: _Wait) -> None:
            nonlocal failure
            try:
                await wait()
            except taquba.TaqubaError as exc:
                if failure is None:
                    failure = exc
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(run, wait)
    if failure is not None:
        raise failure
