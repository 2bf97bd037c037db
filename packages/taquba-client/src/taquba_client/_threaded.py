"""`ThreadedWorker`: a remote worker over the synchronous `Client`, handlers in threads.

For synchronous code (Django models, blocking SDKs) and for handlers that release the GIL
(hashing, compression, numpy). Handlers run in ``concurrency`` daemon threads; the thread that
calls `ThreadedWorker.run` claims; one more thread renews every lease in flight with a batched
call. A thread cannot be cancelled: a handler whose claim is lost, or that outlives the
shutdown grace, keeps running until it returns, but its outcome is discarded (the claim is gone,
or was nacked "the worker stopped before the job finished").
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from ._errors import ClaimLost, ClientError, UsageError
from ._retry import RetryPolicy
from ._types import Claim, Effects, Job, Nack, Settlement
from ._worker import (
    STOPPED,
    check_options,
    describe,
    outcome,
    renew_interval,
    resolve_handler,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._client import Client

__all__ = ["SyncHandler", "ThreadLease", "ThreadedWorker", "run_worker_threaded"]

log = logging.getLogger("taquba_client.worker")

_PERMANENT_CODES = {400, 401, 403, 404, 413, 415}
_BACKOFF = RetryPolicy(attempts=1, initial_delay=0.2, max_delay=10.0)


class ThreadLease:
    """What a synchronous handler gets besides the job: its lease and its cancel signal."""

    __slots__ = ("_cancel", "_claim", "_client", "_expires_at", "_lost")

    def __init__(self, client: Client, claim: Claim) -> None:
        """Wrap ``claim``; `ThreadedWorker` makes one per delivery."""
        self._client = client
        self._claim = claim
        self._expires_at: int | None = claim.lease_expires_at
        self._cancel = threading.Event()
        self._lost = False
        if claim.job.cancel_requested:
            self._cancel.set()

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
        """Whether the job's cancellation was requested, or its claim lost: stop soon."""
        return self._cancel.is_set()

    def wait_cancel_requested(self, timeout: float | None = None) -> bool:
        """Block until `cancel_requested` (or ``timeout`` seconds); return whether it is."""
        return self._cancel.wait(timeout)

    def renew(self, extension: float) -> int:
        """Make the lease expire ``extension`` seconds from now; return the new expiry.

        Raises:
            ClaimLost: the server no longer holds the claim.
        """
        try:
            result = self._client.renew(self._claim, extension)
        except ClaimLost:
            self._mark_lost()
            raise
        self._update(result.expires_at, result.cancel_requested)
        return result.expires_at or 0

    def _update(self, expires_at: int | None, cancel_requested: bool) -> None:
        if expires_at is not None:
            self._expires_at = expires_at
        if cancel_requested:
            self._cancel.set()

    def _mark_lost(self) -> None:
        self._lost = True
        self._expires_at = None
        self._cancel.set()

    def __repr__(self) -> str:
        return f"<taquba_client.ThreadLease {self._claim.job.queue_name}/{self._claim.id}>"


SyncHandlerFunction: TypeAlias = "Callable[[Job, ThreadLease], Effects | None]"


class SyncJobHandler(Protocol):
    """An object whose ``process`` method handles jobs synchronously."""

    def process(self, job: Job, lease: ThreadLease) -> Effects | None:
        """Handle one job; return effects to apply with the ack, or None."""
        ...


SyncHandler: TypeAlias = "SyncHandlerFunction | SyncJobHandler"
"""What `ThreadedWorker` accepts: a function ``(job, lease) -> Effects | None`` or an object
with such a ``process`` method; outcomes map to settlements as for `Worker`."""


@dataclass(slots=True)
class _Entry:
    claim: Claim
    lease: ThreadLease
    done: bool = False
    abandoned: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class ThreadedWorker:
    """Serves one queue of a remote server with handlers in threads.

        client = taquba_client.Client("http://127.0.0.1:8000")
        worker = taquba_client.ThreadedWorker(client, "thumbnails", make_thumbnail, concurrency=4)
        signal.signal(signal.SIGTERM, lambda *_: worker.shutdown())
        worker.run()   # Ctrl-C: KeyboardInterrupt, jobs in flight nacked

    It installs no signal handler: wire SIGTERM to `shutdown` as above (SIGINT raises
    `KeyboardInterrupt` in `run`, which nacks the jobs in flight and re-raises).

    Args:
        client: The client (shared by every thread; the worker does not close it).
        queue_name: The queue to serve.
        handler: See `SyncHandler`.
        concurrency: How many handler threads.
        lease: Seconds each claim is held before it must be renewed (None: the queue's).
        poll_wait: Seconds a claim long-polls the server; it also bounds how long `shutdown`
            takes to stop the claiming.
        shutdown_grace: After `shutdown`, seconds jobs in flight get to finish before they
            are nacked and abandoned (None: as long as they take).

    Raises:
        UsageError: an option is out of range, or ``handler`` is not callable.
    """

    def __init__(
        self,
        client: Client,
        queue_name: str,
        handler: SyncHandler,
        *,
        concurrency: int = 8,
        lease: float | None = None,
        poll_wait: float = 5.0,
        shutdown_grace: float | None = None,
    ) -> None:
        check_options(concurrency, lease, poll_wait, shutdown_grace)
        self._client = client
        self._queue_name = queue_name
        self._handler: SyncHandlerFunction = resolve_handler(handler)
        self._concurrency = concurrency
        self._lease = lease
        self._poll_wait = poll_wait
        self._grace = shutdown_grace
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._in_flight: dict[str, _Entry] = {}
        self._running = False

    @property
    def queue_name(self) -> str:
        """The queue this worker serves."""
        return self._queue_name

    @property
    def in_flight(self) -> int:
        """How many jobs are running."""
        return len(self._in_flight)

    def shutdown(self) -> None:
        """Stop claiming; `run` returns once the jobs in flight are settled or abandoned.

        Idempotent and sticky; safe from any thread and from a signal handler.
        """
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    @property
    def shutting_down(self) -> bool:
        """Whether `shutdown` has been called."""
        return self._stop.is_set()

    def run(self) -> None:
        """Claim and process jobs until `shutdown`; blocks the calling thread.

        Returns:
            None, after a graceful shutdown.

        Error handling: as `Worker.run`: claim failures are retried with backoff and
        logged; `Unauthorized`, `Forbidden` and `InvalidRequest` end `run`. On
        `KeyboardInterrupt` (or any error) the jobs in flight are nacked and abandoned.

        Raises:
            UsageError: this worker is already running.
        """
        if self._running:
            raise UsageError("this ThreadedWorker is already running")
        self._running = True
        work: queue.Queue[_Entry | None] = queue.Queue()
        threads = [
            threading.Thread(
                target=self._serve_thread, args=(work,), daemon=True, name=f"taquba-worker-{i}"
            )
            for i in range(self._concurrency)
        ]
        renewer_stop = threading.Event()
        renewer = threading.Thread(
            target=self._renewer, args=(renewer_stop,), daemon=True, name="taquba-renewer"
        )
        for thread in threads:
            thread.start()
        renewer.start()
        try:
            self._claim_loop(work)
            self._drain()
        except BaseException:
            self._abandon_all()
            raise
        finally:
            for _ in threads:
                work.put(None)
            renewer_stop.set()
            self._running = False

    def _claim_loop(self, work: queue.Queue[_Entry | None]) -> None:
        failures = 0
        while not self._stop.is_set():
            with self._changed:
                while len(self._in_flight) >= self._concurrency and not self._stop.is_set():
                    self._changed.wait()
                free = self._concurrency - len(self._in_flight)
            if self._stop.is_set():
                return
            try:
                claims = self._client.claim_batch(
                    self._queue_name, free, lease=self._lease, wait=self._poll_wait
                )
            except ClientError as exc:
                if exc.status in _PERMANENT_CODES or isinstance(exc, UsageError):
                    raise
                failures += 1
                delay = _BACKOFF.delay(failures)
                log.warning(
                    "claiming from %r failed (%s); retrying in %.1f s", self._queue_name, exc, delay
                )
                self._stop.wait(delay)
                continue
            failures = 0
            for claim in claims:
                entry = _Entry(claim, ThreadLease(self._client, claim))
                with self._changed:
                    self._in_flight[claim.token] = entry
                work.put(entry)

    def _drain(self) -> None:
        deadline = None if self._grace is None else time.monotonic() + self._grace
        with self._changed:
            while self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(remaining)
        self._abandon_all()

    def _abandon_all(self) -> None:
        with self._changed:
            entries = list(self._in_flight.values())
        for entry in entries:
            with entry.lock:
                if entry.done or entry.abandoned:
                    continue
                entry.abandoned = True
            self._settle(Nack(claim=entry.claim, error=STOPPED))
            self._forget(entry)

    def _forget(self, entry: _Entry) -> None:
        with self._changed:
            self._in_flight.pop(entry.claim.token, None)
            self._changed.notify_all()

    def _serve_thread(self, work: queue.Queue[_Entry | None]) -> None:
        while (entry := work.get()) is not None:
            try:
                self._process(entry)
            finally:
                self._forget(entry)

    def _process(self, entry: _Entry) -> None:
        result: object = None
        error: BaseException | None = None
        try:
            result = self._handler(entry.claim.job, entry.lease)
        except Exception as exc:
            error = exc
            log.info(
                "job %s/%s failed: %s", entry.claim.job.queue_name, entry.claim.id, describe(exc)
            )
        with entry.lock:
            if entry.abandoned:
                return
            entry.done = True
        if entry.lease._lost:  # pyright: ignore[reportPrivateUsage]
            log.warning("lost the claim on %s while its handler ran: not settled", entry.claim.id)
            return
        self._settle(outcome(entry.claim, result, error))

    def _settle(self, settlement: Settlement) -> None:
        try:
            result = self._client.settle([settlement])[0]
        except ClientError as exc:
            log.error("could not settle %s: %s", settlement.claim.id, exc)
            return
        if isinstance(result.error, ClaimLost):
            log.warning(
                "lost the claim on %s before settling it: %s", settlement.claim.id, result.error
            )
        elif result.error is not None:
            log.error("could not settle %s: %s", settlement.claim.id, result.error)

    def _renewer(self, stop: threading.Event) -> None:
        while True:
            with self._changed:
                entries = [e for e in self._in_flight.values() if not (e.done or e.abandoned)]
            if stop.wait(renew_interval([e.claim.lease for e in entries], self._lease)):
                return
            with self._changed:
                entries = [e for e in self._in_flight.values() if not (e.done or e.abandoned)]
            if not entries:
                continue
            try:
                results = self._client.renew_batch(
                    [(e.claim, e.claim.lease or self._lease or 30.0) for e in entries]
                )
            except ClientError as exc:
                log.warning("renewing %d leases failed: %s", len(entries), exc)
                continue
            # in request order; the same job may be in flight twice (lost, then redelivered)
            for entry, result in zip(entries, results, strict=False):
                if result.job_id != entry.claim.id:
                    continue
                if result.lost:
                    entry.lease._mark_lost()  # pyright: ignore[reportPrivateUsage]
                else:
                    entry.lease._update(result.expires_at, result.cancel_requested)  # pyright: ignore[reportPrivateUsage]

    def __repr__(self) -> str:
        return (
            f"<taquba_client.ThreadedWorker {self._queue_name!r} concurrency={self._concurrency}>"
        )


def run_worker_threaded(
    client: Client, queue_name: str, handler: SyncHandler, **options: Any
) -> None:
    """Build a `ThreadedWorker` with ``options`` and run it (blocks; Ctrl-C stops it).

    ``options`` are `ThreadedWorker`'s keyword arguments.
    """
    ThreadedWorker(client, queue_name, handler, **options).run()
