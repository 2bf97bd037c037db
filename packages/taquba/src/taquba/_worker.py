"""`Worker`: claim jobs, run a handler, settle the outcome."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

import trio

from ._errors import (
    ClaimLost,
    Fenced,
    KvConflict,
    PermanentFailure,
    QueueClosed,
    RetryLater,
    StorageFatal,
    TaqubaError,
    UsageError,
)
from ._health import HealthTracker
from ._interrupts import plain_interrupts, protect
from ._keys import validate_queue_name
from ._queue import Queue
from ._records import JobRecord
from ._types import Claim, Effects
from ._validate import check_int, check_optional_seconds, check_seconds, clamp_time, duration_ms

if TYPE_CHECKING:
    from ._health import Streak
    from ._protocol import QueueLike

__all__ = [
    "SETTLEMENT_MARGIN",
    "Handler",
    "HandlerFunction",
    "JobHandler",
    "LeaseHandle",
    "Worker",
]

log = logging.getLogger("taquba.worker")

SETTLEMENT_MARGIN = 5.0
"""Seconds `LeaseHandle.ensure_at_least` adds on top of what the handler asks for."""

_SHUTDOWN_NACK_GRACE = 10.0
_MAX_CONCURRENCY = 2**31 - 1
_FATAL = (Fenced, QueueClosed, StorageFatal)
_REDELIVERED = (
    "the job's lease will expire and the reaper will requeue it "
    "(or dead-letter it, if that was its last attempt)"
)


class LeaseHandle:
    """What a handler gets besides the job: its lease and its cancel signal."""

    __slots__ = ("_claim", "_queue")

    def __init__(self, queue: QueueLike, claim: Claim) -> None:
        """Wrap ``claim`` of ``queue`` (any `QueueLike`); `Worker` makes one per delivery.

        Build one yourself only when writing your own claim loop, to hand handlers the same
        interface `Worker` gives them.
        """
        self._queue = queue
        self._claim = claim

    @property
    def expires_at(self) -> int | None:
        """When the lease expires (ms since the epoch), or None if the claim is gone."""
        return self._queue.lease_expiry(self._claim)

    def renew(self, extension: float) -> int:
        """Set the lease to expire ``extension`` seconds from now; return the new expiry.

        Raises:
            ClaimLost: the lease already expired and the job was requeued.
        """
        return self._queue.renew_lease(self._claim, extension)

    def ensure_at_least(self, remaining: float) -> None:
        """Make sure the lease lasts ``remaining`` more seconds (plus a settlement margin).

        Never shortens the lease. Call it before a long step, e.g. an HTTP call with a 60 s
        timeout: ``lease.ensure_at_least(60)``.

        Raises:
            ClaimLost: the lease already expired and the job was requeued.
        """
        remaining = check_seconds("remaining", remaining)
        needed = clamp_time(self._queue.clock.now_ms() + duration_ms(remaining + SETTLEMENT_MARGIN))
        current = self.expires_at
        if current is None:
            raise ClaimLost(self._claim.id)
        if current < needed:
            self.renew(remaining + SETTLEMENT_MARGIN)

    @property
    def cancel_requested(self) -> bool:
        """Whether the job's cancellation was requested (`Queue.cancel`) or its lease was lost."""
        return self._claim.cancel_requested

    async def wait_cancel_requested(self) -> None:
        """Wait until `cancel_requested` becomes true."""
        await self._claim.wait_cancel_requested()


HandlerFunction: TypeAlias = Callable[[JobRecord, LeaseHandle], Awaitable[Effects | None]]
"""An async function taking the job and its lease handle, returning effects or None."""


@runtime_checkable
class JobHandler(Protocol):
    """An object whose ``process`` method handles jobs (an alternative to a plain function)."""

    async def process(self, job: JobRecord, lease: LeaseHandle) -> Effects | None:
        """Handle one job. Return effects to apply with the ack, or None."""
        ...


Handler: TypeAlias = HandlerFunction | JobHandler
"""What `Worker` accepts.

The handler's outcome settles the job: returning acks it (applying returned `Effects` in the
same transaction); raising `PermanentFailure` dead-letters it; raising `RetryLater` nacks it
with a least delay; raising anything else nacks it (retry with backoff, dead-letter once
attempts run out). When the `Effects` of an ack or a dead-letter expect a KV value that no
longer holds (`Effects.kv_expect`, `KvConflict`), nothing of them is written and the job is
nacked, so the handler runs again on the current state.
"""


def _resolve(handler: Handler) -> HandlerFunction:
    if isinstance(handler, JobHandler):
        return handler.process
    if callable(handler):
        return handler
    raise UsageError("handler must be an async callable or an object with a process() method")


async def _process(
    queue: QueueLike, claim: Claim, handler: HandlerFunction, settling: Streak | None = None
) -> None:
    """Run ``handler`` on one claim and settle the outcome. Only fatal errors escape.

    A settlement that fails with a non-fatal error is logged (a transient one rate limited
    through ``settling``) and the loop goes on: the claim's lease expires and the reaper hands
    the job out again.
    """
    if isinstance(queue, Queue) and queue.observers:
        with queue._context.observers.handling(claim):  # pyright: ignore[reportPrivateUsage]
            await _settle_run(queue, claim, handler, settling)
    else:
        await _settle_run(queue, claim, handler, settling)


async def _settle_run(
    queue: QueueLike, claim: Claim, handler: HandlerFunction, settling: Streak | None
) -> None:
    """`_process` inside the observers' `Observer.handling` contexts."""
    try:
        try:
            effects = await _run_handler(handler, claim.job, LeaseHandle(queue, claim))
        except PermanentFailure as failure:
            try:
                await queue.dead_letter(claim, failure.reason, effects=failure.effects)
            except KvConflict as exc:
                await _nack_conflict(queue, claim, exc)
            return
        except RetryLater as later:
            await queue.nack(
                claim,
                later.reason,
                retry_after=later.retry_after,
                kv_writes=later.kv_writes or None,
            )
            return
        except Exception as exc:
            log.info("job %s/%s failed: %r", claim.queue_name, claim.id, exc)
            await queue.nack(claim, _describe(exc))
            return
        except BaseException:
            # Cancelled (shutdown past its grace, or an outer cancel): hand the job back now
            # rather than leaving it to lease expiry.
            with trio.move_on_after(_SHUTDOWN_NACK_GRACE, shield=True):
                await queue.nack(claim, "the worker stopped before the job finished")
            raise
        if effects is not None and not isinstance(effects, Effects):  # pyright: ignore[reportUnnecessaryIsInstance]
            await queue.nack(
                claim, f"handler returned {type(effects).__name__}, expected Effects or None"
            )
            return
        try:
            await queue.ack_with(claim, effects)
        except KvConflict as exc:
            await _nack_conflict(queue, claim, exc)
            return
    except ClaimLost as exc:
        log.warning(
            "lost the claim on %s/%s before settling it (%s): the reaper requeued it, or "
            "dead-lettered it if that was its last attempt",
            claim.queue_name,
            claim.id,
            exc,
        )
    except _FATAL:
        raise
    except TaqubaError as exc:
        if exc.transient and settling is not None:
            settling.failed(exc)  # an outage: logged rate-limited, shown by Queue.health
        else:
            log.error("could not settle %s/%s: %s", claim.queue_name, claim.id, exc)
        return
    if settling is not None:
        settling.succeeded()


async def _nack_conflict(queue: QueueLike, claim: Claim, conflict: KvConflict) -> None:
    """The handler's effects expected a KV value that changed: run the handler again.

    Nothing of the settlement was written and the claim is still held, so the job is nacked
    (a retry with backoff, or a dead-letter once attempts run out, without the effects).
    """
    log.info("job %s/%s: %s; retrying it", claim.queue_name, claim.id, conflict)
    await queue.nack(claim, f"kv_expect did not hold: {conflict}")


@trio.lowlevel.disable_ki_protection
async def _run_handler(
    handler: HandlerFunction, job: JobRecord, lease: LeaseHandle
) -> Effects | None:
    """Run the user's handler without KI protection, so Ctrl-C can stop a handler that loops."""
    return await handler(job, lease)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _idle(
    queue: QueueLike, queue_name: str, poll_interval: float, shutdown: trio.Event
) -> None:
    """Wait for a wakeup on ``queue_name``, shutdown, or ``poll_interval``, whichever is first.

    A queue failure (`Fenced`, `QueueClosed`) is raised as itself, not inside an exception
    group: the nursery here is an implementation detail.
    """
    failure: TaqubaError | None = None
    with trio.move_on_after(poll_interval):
        async with trio.open_nursery() as nursery:

            async def on_shutdown() -> None:
                await shutdown.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_shutdown)
            try:
                await queue.wait_for_jobs_on(queue_name)
            except TaqubaError as exc:
                failure = exc
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _pause(queue: QueueLike, delay: float, shutdown: trio.Event) -> None:
    """Wait ``delay`` seconds before retrying, or less if shutdown is set or the queue stops."""
    with trio.move_on_after(delay):
        async with trio.open_nursery() as nursery:

            async def on_stop() -> None:
                await queue.wait_stopped()
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_stop)
            await shutdown.wait()
            nursery.cancel_scope.cancel()


def _health_of(queue: QueueLike) -> HealthTracker:
    """Where a worker loop reports its retry streaks.

    A `Queue`'s own tracker, so `Queue.health` shows them; for any other `QueueLike` one of
    the loop's own (the backoff and the rate-limited warnings work the same).
    """
    if isinstance(queue, Queue):
        return queue._health  # pyright: ignore[reportPrivateUsage]
    return HealthTracker()


def _claim_failed(exc: TaqubaError, claiming: Streak) -> float:
    """Return the delay before the next claim after ``exc``, or raise it if it is permanent."""
    if not exc.transient:
        raise exc
    return claiming.failed(exc)


@plain_interrupts
async def _serve_worker(
    queue: QueueLike,
    queue_name: str,
    handler: HandlerFunction,
    *,
    concurrency: int,
    poll_interval: float,
    stop: trio.Event,
    grace: float | None,
    task_status: trio.TaskStatus[None],
) -> None:
    """The loop behind `Worker.serve`, on arguments `Worker` has already checked.

    Claims in batches sized to free capacity (one claim transaction per batch), runs each job
    in its own task and settles each on its own; ``concurrency=1`` is the one-at-a-time case.
    Once ``stop`` is set it stops claiming and drains the jobs in flight; with ``grace`` set,
    jobs still running after that many seconds are cancelled (and nacked by `_process`).
    Transient claim errors are retried with backoff; settlement failures are logged; any other
    error cancels the jobs in flight and is raised as itself (not inside an exception group).
    """
    in_flight = 0
    slot_freed = trio.Event()
    fatal: list[BaseException] = []
    health = _health_of(queue)
    claiming = health.streak(f"worker {queue_name!r}")
    settling = health.streak(f"settlements of worker {queue_name!r}", after=_REDELIVERED)

    async with trio.open_nursery() as jobs:

        @trio.lowlevel.enable_ki_protection
        async def run_one(claim: Claim) -> None:
            nonlocal in_flight, slot_freed
            try:
                await _process(queue, claim, handler, settling)
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
                    event = slot_freed
                    async with trio.open_nursery() as waiter:

                        async def on_shutdown(
                            scope: trio.CancelScope = waiter.cancel_scope,
                        ) -> None:
                            await stop.wait()
                            scope.cancel()

                        async def on_failure(scope: trio.CancelScope = waiter.cancel_scope) -> None:
                            await queue.wait_stopped()
                            scope.cancel()

                        waiter.start_soon(on_shutdown)
                        waiter.start_soon(on_failure)
                        await event.wait()
                        waiter.cancel_scope.cancel()
                    if queue.failure is not None:
                        raise queue.failure  # caught below: cancels the jobs in flight
                    continue
                try:
                    claims = await queue.claim_batch(queue_name, free)
                except TaqubaError as exc:
                    await _pause(queue, _claim_failed(exc, claiming), stop)
                    continue
                claiming.succeeded()
                for claim in claims:
                    in_flight += 1
                    jobs.start_soon(run_one, claim)
                if not claims:
                    await _idle(queue, queue_name, poll_interval, stop)
        except TaqubaError as exc:  # permanent: `_claim_failed` retries transient ones
            fatal.append(exc)
            jobs.cancel_scope.cancel()
        finally:
            health.release(claiming)
        if grace is not None and not fatal:
            jobs.cancel_scope.deadline = trio.current_time() + grace
    health.release(settling)
    if fatal:
        raise fatal[0]


class Worker:
    """Serves one queue name: claims jobs, runs ``handler`` on each, settles the outcome.

    The family convention (see "Conventions" in the design docs): build it with its
    dependencies, start it with ``await nursery.start(worker.serve)``, stop it gracefully with
    `shutdown`, or hard-stop it by cancelling the scope around `serve`.

        worker = taquba.Worker(queue, "emails", send_email, concurrency=16)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            ...
            worker.shutdown()

    It claims in batches sized to its free slots (one claim transaction per batch), runs each
    job in its own task and settles each on its own. ``concurrency=1`` processes one job at a
    time, in claim order. With ``shutdown_grace=None`` a job in progress always finishes.

    Args:
        queue: the open queue: a `Queue`, or any `QueueLike` (such as a remote queue whose
            owner is another process; its claims may take a network round trip, and its
            transient failures are retried like a `Queue`'s).
        queue_name: which queue to serve.
        handler: see `Handler`.
        concurrency: the most jobs in flight at once.
        poll_interval: the longest idle wait between claim attempts, in seconds (an enqueue
            on the same `Queue` wakes an idle worker at once).
        shutdown_grace: after `shutdown`, seconds the jobs in flight get to finish before
            they are cancelled and handed back with a nack, which counts as an attempt, as a
            crash would (the job retries with backoff, or is dead-lettered on its last one).
            None (the default) or ``math.inf``: wait as long as they take.

    Raises:
        InvalidArgument: an argument is of the wrong type or out of range (checked here,
            before anything runs).
        InvalidQueueName: ``queue_name`` is not a usable queue name.
        UsageError: ``handler`` is neither an async callable nor a `JobHandler`.
    """

    __slots__ = (
        "_concurrency",
        "_grace",
        "_handler",
        "_poll_interval",
        "_queue",
        "_queue_name",
        "_serving",
        "_stop",
    )

    def __init__(
        self,
        queue: QueueLike,
        queue_name: str,
        handler: Handler,
        *,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        shutdown_grace: float | None = None,
    ) -> None:
        """Check the arguments and build the worker; nothing runs until `serve`."""
        self._queue = queue
        self._queue_name = validate_queue_name(queue_name)
        self._handler = _resolve(handler)
        self._concurrency = check_int("concurrency", concurrency, low=1, high=_MAX_CONCURRENCY)
        self._poll_interval = check_seconds("poll_interval", poll_interval, positive=True)
        self._grace = check_optional_seconds("shutdown_grace", shutdown_grace, allow_inf=True)
        self._stop = trio.Event()
        self._serving = False

    @property
    def queue_name(self) -> str:
        """The queue name this worker serves."""
        return self._queue_name

    @property
    def concurrency(self) -> int:
        """The most jobs in flight at once."""
        return self._concurrency

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Claim and process jobs until `shutdown` is called or the scope is cancelled.

        Reports readiness through ``task_status`` (for ``nursery.start``) before the first
        claim. After `shutdown` it stops claiming, lets the jobs in flight finish within
        ``shutdown_grace`` and returns. Cancelling the surrounding scope is the hard stop: jobs
        in flight are cancelled and handed back with a nack. A worker that has been shut down
        returns at once when served again.

        Returns:
            None, after a graceful shutdown.

        Error handling: a transient error on the claim path (`StorageUnavailable`) is retried
        with capped exponential backoff and jitter, logged as a warning at most every 30 s,
        and, on a `Queue`, shown by `Queue.health` while it lasts (a remote `QueueLike`
        raises `StorageUnavailable` while its server is unreachable). A settlement that fails
        (including `ClaimLost`) is logged and the loop goes on: the job's lease expires and
        the reaper requeues it (or dead-letters it after its last attempt). Any other error
        cancels the jobs in flight and is raised as itself, not inside an exception group:
        `Fenced`, `QueueClosed`, `StorageFatal`, or a permanent `StorageError` such as
        `StorageMisconfigured`. Ctrl-C leaves as one `KeyboardInterrupt`, the jobs in flight
        cancelled and handed back.

        Raises:
            UsageError: this worker is already serving (one `serve` at a time).
        """
        if self._serving:
            raise UsageError("this Worker is already serving; build one Worker per loop")
        self._serving = True
        try:
            await _serve_worker(
                self._queue,
                self._queue_name,
                self._handler,
                concurrency=self._concurrency,
                poll_interval=self._poll_interval,
                stop=self._stop,
                grace=self._grace,
                task_status=task_status,
            )
        finally:
            self._serving = False

    def shutdown(self) -> None:
        """Stop claiming; `serve` returns once the jobs in flight are done (see ``shutdown_grace``).

        Idempotent and sticky; safe to call before `serve` starts (it then returns at once),
        from any task of the same trio run (from another thread, use
        ``trio.from_thread.run_sync(worker.shutdown)``).
        """
        self._stop.set()

    @property
    def shutting_down(self) -> bool:
        """Whether `shutdown` has been called."""
        return self._stop.is_set()

    def __repr__(self) -> str:
        return f"<taquba.Worker {self._queue_name!r} concurrency={self._concurrency}>"


protect(LeaseHandle, _process, _settle_run, _idle, _serve_worker)
