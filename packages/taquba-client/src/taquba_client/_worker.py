"""`Worker`: a remote worker over `AsyncClient`, for asyncio and trio alike.

It uses anyio and httpx only, so the same object runs under ``asyncio.run(worker.run())``
and ``trio.run(worker.run)``. Its shape follows the core's `taquba.Worker`:

- claims in batches sized to its free slots, with a long poll, so an idle worker costs one
  open request and a busy one a claim per batch;
- renews the leases of every job in flight with one batched call per interval (a third of
  the shortest lease), fires `Lease.cancel_requested` when the server reports a cancel, and
  abandons a handler whose claim the server lost (nothing is settled for it);
- settles through ``POST /v1/claims/settle``: while one settlement call is on the wire, the
  settlements of other jobs queue up and leave together in the next one;
- backs off and retries, logging, while the server is unreachable, instead of crashing;
- `Worker.shutdown` stops claiming, gives jobs in flight ``shutdown_grace`` seconds, then
  cancels them and nacks them ("the worker stopped before the job finished"), as the core's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import anyio

from ._errors import (
    ClaimLost,
    ClientError,
    Forbidden,
    InvalidRequest,
    KvConflict,
    NotFound,
    PermanentFailure,
    RetryLater,
    ServerUnavailable,
    Unauthorized,
    UsageError,
)
from ._retry import RetryPolicy
from ._types import Ack, Claim, DeadLetter, Effects, Job, Nack, Settlement, SettleResult

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._client import AsyncClient

__all__ = ["AsyncHandler", "Lease", "Worker", "run_worker"]

log = logging.getLogger("taquba_client.worker")

STOPPED = "the worker stopped before the job finished"
_SETTLE_GRACE = 10.0
# Settle calls one worker keeps in flight at once. Each call waits about one WAL flush on the
# server; with one call at a time a settlement that just missed a call waited for that call
# and then its own (about 1.5 flushes on average). A few calls in flight cut that to about one.
_SETTLE_CALLS = 4
"""Seconds a settlement may take once the worker is being cancelled."""
_PERMANENT = (Unauthorized, Forbidden, InvalidRequest, NotFound, UsageError)
"""Claim errors that retrying cannot fix: they end `Worker.run`."""
_BACKOFF = RetryPolicy(attempts=1, initial_delay=0.2, max_delay=10.0)


class Lease:
    """What an async handler gets besides the job: its lease and its cancel signal."""

    __slots__ = ("_cancel", "_cancel_requested", "_claim", "_client", "_expires_at", "_lost")

    def __init__(self, client: AsyncClient, claim: Claim) -> None:
        """Wrap ``claim``; `Worker` makes one per delivery."""
        self._client = client
        self._claim = claim
        self._expires_at: int | None = claim.lease_expires_at
        self._cancel = anyio.Event()
        self._cancel_requested = False
        self._lost = False
        if claim.job.cancel_requested:
            self._request_cancel()

    @property
    def claim(self) -> Claim:
        """The claim this lease belongs to."""
        return self._claim

    @property
    def expires_at(self) -> int | None:
        """When the lease expires (ms since the epoch), or None once the claim is lost."""
        return self._expires_at

    @property
    def cancel_requested(self) -> bool:
        """Whether the job's cancellation was requested, or its claim lost."""
        return self._cancel_requested

    async def wait_cancel_requested(self) -> None:
        """Wait until `cancel_requested` becomes true."""
        await self._cancel.wait()

    async def renew(self, extension: float) -> int:
        """Make the lease expire ``extension`` seconds from now; return the new expiry.

        The worker renews leases on its own; call this before a step longer than the lease.

        Raises:
            ClaimLost: the server no longer holds the claim.
        """
        try:
            result = await self._client.renew(self._claim, extension)
        except ClaimLost:
            self._mark_lost()
            raise
        self._update(result.expires_at, result.cancel_requested)
        return result.expires_at or 0

    def _update(self, expires_at: int | None, cancel_requested: bool) -> None:
        if expires_at is not None:
            self._expires_at = expires_at
        if cancel_requested:
            self._request_cancel()

    def _mark_lost(self) -> None:
        self._lost = True
        self._expires_at = None
        self._request_cancel()

    def _request_cancel(self) -> None:
        self._cancel_requested = True
        self._cancel.set()

    def __repr__(self) -> str:
        return f"<taquba_client.Lease {self._claim.job.queue_name}/{self._claim.id}>"


AsyncHandlerFunction: TypeAlias = "Callable[[Job, Lease], Awaitable[Effects | None]]"


class AsyncJobHandler(Protocol):
    """An object whose ``process`` method handles jobs."""

    async def process(self, job: Job, lease: Lease) -> Effects | None:
        """Handle one job; return effects to apply with the ack, or None."""
        ...


AsyncHandler: TypeAlias = "AsyncHandlerFunction | AsyncJobHandler"
"""What `Worker` accepts: an async function ``(job, lease) -> Effects | None``, or an object
with such a ``process`` method.

Returning acks the job (with the returned `Effects`); raising `PermanentFailure`
dead-letters it; raising `RetryLater` nacks it with a least delay; raising anything else nacks
it (retry with backoff, dead-letter once attempts run out).
"""


def resolve_handler(handler: object) -> Any:
    """The callable behind ``handler``, or `UsageError`."""
    process = getattr(handler, "process", None)
    if callable(process):
        return process
    if callable(handler):
        return handler
    raise UsageError("handler must be a callable or an object with a process() method")


def describe(exc: BaseException) -> str:
    """``exc`` as a job's ``last_error``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def outcome(claim: Claim, result: object, error: BaseException | None) -> Settlement:
    """The settlement for a handler's return value or exception (the core's mapping)."""
    if isinstance(error, PermanentFailure):
        return DeadLetter(claim=claim, reason=error.reason, effects=error.effects)
    if isinstance(error, RetryLater):
        return Nack(claim=claim, error=error.reason, retry_after=error.retry_after)
    if error is not None:
        return Nack(claim=claim, error=describe(error))
    if result is not None and not isinstance(result, Effects):
        return Nack(
            claim=claim, error=f"handler returned {type(result).__name__}, expected Effects or None"
        )
    return Ack(claim=claim, effects=result)


def check_options(
    concurrency: int, lease: float | None, poll_wait: float, shutdown_grace: float | None
) -> None:
    """Check the options both workers share."""
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise UsageError(f"concurrency must be a positive int, not {concurrency!r}")
    if lease is not None and not (0 < lease < math.inf):
        raise UsageError(f"lease must be a positive number of seconds, not {lease!r}")
    if not (0 <= poll_wait <= 60):
        raise UsageError(f"poll_wait must be between 0 and 60 seconds, not {poll_wait!r}")
    if shutdown_grace is not None and not (shutdown_grace >= 0):
        raise UsageError(f"shutdown_grace must be >= 0 or None, not {shutdown_grace!r}")


def renew_interval(leases: list[float], lease: float | None) -> float:
    """Seconds between two renewals: a third of the shortest lease in flight."""
    shortest = min(leases, default=lease if lease is not None else 30.0)
    return max(0.05, shortest / 3)


@dataclass(slots=True)
class _InFlight:
    claim: Claim
    lease: Lease
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    settling: bool = False


@dataclass(slots=True)
class _Pending:
    settlement: Settlement
    done: anyio.Event = field(default_factory=anyio.Event)
    result: SettleResult | BaseException | None = None


class Worker:
    """Serves one queue of a remote server: claims jobs, runs ``handler``, settles them.

        client = taquba_client.AsyncClient("http://127.0.0.1:8000", token="...")
        worker = taquba_client.Worker(client, "emails", send_email, concurrency=16)
        asyncio.run(worker.run())      # or trio.run(worker.run)

    Args:
        client: The client (the worker does not close it).
        queue_name: The queue to serve.
        handler: See `AsyncHandler`.
        concurrency: The most jobs in flight at once.
        lease: Seconds each claim is held before it must be renewed (None: the queue's).
        poll_wait: Seconds a claim long-polls the server when no job is ready (0 to 60).
        shutdown_grace: After `shutdown`, seconds jobs in flight get to finish before they are
            cancelled and nacked (None: as long as they take).

    Raises:
        UsageError: an option is out of range, or ``handler`` is not callable.
    """

    def __init__(
        self,
        client: AsyncClient,
        queue_name: str,
        handler: AsyncHandler,
        *,
        concurrency: int = 8,
        lease: float | None = None,
        poll_wait: float = 10.0,
        shutdown_grace: float | None = None,
    ) -> None:
        check_options(concurrency, lease, poll_wait, shutdown_grace)
        self._client = client
        self._queue_name = queue_name
        self._handler: AsyncHandlerFunction = resolve_handler(handler)
        self._concurrency = concurrency
        self._lease = lease
        self._poll_wait = poll_wait
        self._grace = shutdown_grace
        self._stopping = False
        self._running = False
        self._stop: anyio.Event | None = None
        self._claim_scope: anyio.CancelScope | None = None
        self._in_flight: dict[str, _InFlight] = {}
        self._pending: list[_Pending] = []
        self._senders = 0
        self._slot_freed: anyio.Event | None = None

    @property
    def queue_name(self) -> str:
        """The queue this worker serves."""
        return self._queue_name

    @property
    def concurrency(self) -> int:
        """The most jobs in flight at once."""
        return self._concurrency

    @property
    def in_flight(self) -> int:
        """How many jobs are running or settling now."""
        return len(self._in_flight)

    def shutdown(self) -> None:
        """Stop claiming; `run` returns once the jobs in flight are settled.

        Idempotent and sticky; before `run`, it makes `run` return at once. Call it from the
        event loop's thread (a signal handler installed with ``loop.add_signal_handler`` or
        trio's ``open_signal_receiver`` qualifies).
        """
        self._stopping = True
        if self._stop is not None:
            self._stop.set()
        if self._claim_scope is not None:
            self._claim_scope.cancel()

    @property
    def shutting_down(self) -> bool:
        """Whether `shutdown` has been called."""
        return self._stopping

    async def run(self) -> None:
        """Claim and process jobs until `shutdown`, or until cancelled.

        Returns:
            None, after a graceful shutdown.

        Error handling: connect errors, ``503`` and timeouts on the claim path are retried
        with capped exponential backoff and jitter, logged as warnings. A settlement refused
        with `ClaimLost` is logged and dropped (the job went back to the queue). `Unauthorized`,
        `Forbidden`, `InvalidRequest`, `NotFound` and `UsageError` (a closed
        client) on the claim path end `run` and are raised as
        themselves. Cancelling `run` (Ctrl-C) cancels the handlers and nacks their jobs, each
        within a few seconds, before the cancellation propagates.

        Raises:
            UsageError: this worker is already running.
        """
        if self._running:
            raise UsageError("this Worker is already running; build one Worker per loop")
        self._running = True
        self._stop = anyio.Event()
        self._slot_freed = anyio.Event()
        if self._stopping:
            self._running = False
            return
        fatal: list[ClientError] = []
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(self._renewer)
                async with anyio.create_task_group() as handlers:
                    try:
                        await self._claim_loop(handlers)
                    except _PERMANENT as exc:
                        fatal.append(exc)
                        handlers.cancel_scope.cancel()
                    if self._grace is not None:
                        handlers.cancel_scope.deadline = anyio.current_time() + self._grace
                background.cancel_scope.cancel()
        finally:
            self._running = False
            self._claim_scope = None
        if fatal:
            raise fatal[0]

    async def _claim_loop(self, handlers: anyio.abc.TaskGroup) -> None:
        assert self._stop is not None
        failures = 0
        while not self._stopping:
            # A slot is a running handler. A job whose handler finished and whose settlement
            # is on the wire no longer takes one, so the next claim overlaps the settlement's
            # WAL flush; at most `concurrency` more jobs wait for their settlement.
            running = sum(1 for entry in self._in_flight.values() if not entry.settling)
            free = min(self._concurrency - running, 2 * self._concurrency - len(self._in_flight))
            if free <= 0:
                await self._wait_slot()
                continue
            claims: list[Claim] = []
            with anyio.CancelScope() as scope:
                self._claim_scope = scope
                if self._stopping:
                    scope.cancel()
                try:
                    claims = await self._client.claim_batch(
                        self._queue_name, free, lease=self._lease, wait=self._poll_wait
                    )
                except _PERMANENT:
                    raise
                except ClientError as exc:
                    failures += 1
                    delay = _BACKOFF.delay(failures)
                    log.warning(
                        "claiming from %r failed (%s); retrying in %.1f s",
                        self._queue_name,
                        exc,
                        delay,
                    )
                    with anyio.move_on_after(delay):
                        await self._stop.wait()
                    continue
                finally:
                    self._claim_scope = None
            failures = 0
            for claim in claims:
                entry = _InFlight(claim, Lease(self._client, claim))
                self._in_flight[claim.token] = entry
                handlers.start_soon(self._process, entry)

    async def _wait_slot(self) -> None:
        assert self._stop is not None
        assert self._slot_freed is not None
        event = self._slot_freed
        async with anyio.create_task_group() as waiter:

            async def on_stop() -> None:
                assert self._stop is not None
                await self._stop.wait()
                waiter.cancel_scope.cancel()

            waiter.start_soon(on_stop)
            await event.wait()
            waiter.cancel_scope.cancel()

    def _freed(self, token: str) -> None:
        self._in_flight.pop(token, None)
        self._signal_slot()

    def _signal_slot(self) -> None:
        assert self._slot_freed is not None
        self._slot_freed.set()
        self._slot_freed = anyio.Event()

    async def _process(self, entry: _InFlight) -> None:
        claim = entry.claim
        try:
            result: object = None
            error: BaseException | None = None
            try:
                with entry.scope:
                    try:
                        result = await self._handler(claim.job, entry.lease)
                    except Exception as exc:
                        error = exc
                if entry.scope.cancelled_caught:
                    log.warning(
                        "lost the claim on %s/%s while its handler ran: abandoned, not settled",
                        claim.job.queue_name,
                        claim.id,
                    )
                    return
            except BaseException:
                # Cancelled (shutdown past its grace, an outer cancel), or Ctrl-C raised in
                # the handler's own code: hand the job back now rather than at lease expiry.
                with anyio.move_on_after(_SETTLE_GRACE, shield=True):
                    await self._settle_now(Nack(claim=claim, error=STOPPED))
                raise
            if error is not None and not isinstance(error, PermanentFailure | RetryLater):
                log.info("job %s/%s failed: %r", claim.job.queue_name, claim.id, error)
            entry.settling = True
            self._signal_slot()
            with anyio.move_on_after(_SETTLE_GRACE, shield=True):
                await self._settle_batched(outcome(claim, result, error))
        finally:
            self._freed(claim.token)

    async def _settle_now(self, settlement: Settlement) -> None:
        """Settle one claim directly (the cancel path, where batching partners may be gone)."""
        try:
            results = await self._client.settle([settlement])
        except ClientError as exc:
            log.error("could not settle %s: %s", settlement.claim.id, exc)
            return
        self._log_result(settlement, results[0])

    async def _settle_batched(self, settlement: Settlement) -> None:
        """Settle through the batch: one call carries every settlement waiting for the wire."""
        mine = _Pending(settlement)
        self._pending.append(mine)
        if self._senders < _SETTLE_CALLS:
            self._senders += 1
            try:
                while self._pending:
                    batch, self._pending = self._pending, []
                    await self._send(batch)
            finally:
                self._senders -= 1
                if self._senders == 0:
                    for left in self._pending:  # the senders were cancelled: nobody sends them
                        if left.result is None:
                            left.result = ServerUnavailable("the settling task was cancelled")
                            left.done.set()
                    self._pending = [p for p in self._pending if not p.done.is_set()]
        await mine.done.wait()
        result = mine.result
        if (
            isinstance(result, SettleResult)
            and isinstance(result.error, KvConflict)
            and not isinstance(settlement, Nack)
        ):
            # The handler's effects expected a KV value that changed: nothing was written and
            # the server still holds the claim, so the job goes back for another run (as the
            # core's `Worker` does).
            log.info("job %s: %s; retrying it", settlement.claim.id, result.error)
            error = f"kv_expect did not hold: {result.error}"
            await self._settle_batched(Nack(claim=settlement.claim, error=error))
            return
        if isinstance(result, SettleResult):
            self._log_result(settlement, result)
        elif result is not None:
            log.error("could not settle %s: %s", settlement.claim.id, result)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            results = await self._client.settle([p.settlement for p in batch])
        except BaseException as exc:
            for pending in batch:
                pending.result = exc
                pending.done.set()
            if not isinstance(exc, ClientError):
                raise
            return
        for pending, result in zip(batch, results, strict=False):  # in request order
            pending.result = result
        for pending in batch:
            pending.done.set()

    @staticmethod
    def _log_result(settlement: Settlement, result: SettleResult) -> None:
        if isinstance(result.error, ClaimLost):
            log.warning(
                "lost the claim on %s before settling it (%s): the server requeued it, or "
                "dead-lettered it if that was its last attempt",
                settlement.claim.id,
                result.error,
            )
        elif result.error is not None:
            log.error("could not settle %s: %s", settlement.claim.id, result.error)

    async def _renewer(self) -> None:
        while True:
            leases = [e.claim.lease for e in self._in_flight.values()]
            await anyio.sleep(renew_interval(leases, self._lease))
            entries = [e for e in self._in_flight.values() if not e.settling]
            if not entries:
                continue
            try:
                results = await self._client.renew_batch(
                    [(e.claim, e.claim.lease or self._lease or 30.0) for e in entries]
                )
            except ClientError as exc:
                log.warning("renewing %d leases failed: %s", len(entries), exc)
                continue
            # The results come in request order. The same job can be in flight twice (a claim
            # the server lost, and the job's redelivery to this worker), so match by position.
            for entry, result in zip(entries, results, strict=False):
                if entry.settling or result.job_id != entry.claim.id:
                    continue
                if result.lost:
                    entry.lease._mark_lost()  # pyright: ignore[reportPrivateUsage]
                    entry.scope.cancel()
                else:
                    entry.lease._update(result.expires_at, result.cancel_requested)  # pyright: ignore[reportPrivateUsage]

    def __repr__(self) -> str:
        return f"<taquba_client.Worker {self._queue_name!r} concurrency={self._concurrency}>"


async def run_worker(
    client: AsyncClient, queue_name: str, handler: AsyncHandler, **options: Any
) -> None:
    """Build a `Worker` with ``options`` and run it until cancelled (Ctrl-C, a cancel scope).

    ``options`` are `Worker`'s keyword arguments (``concurrency``, ``lease``, ``poll_wait``,
    ``shutdown_grace``).
    """
    await Worker(client, queue_name, handler, **options).run()
