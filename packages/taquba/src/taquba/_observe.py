"""`Observer`: the instrumentation hook of a queue (metrics, traces, logs of your own).

A queue calls its observers synchronously, right after the event happened (after the commit
that made it durable, for writes), from the trio thread that owns the queue. With no observer
registered, each call site costs one truth test of an empty tuple.

`Observers` is the dispatcher the queue holds: it calls each observer in turn and keeps a
failing one from breaking the queue (the first exception of each observer is logged with its
traceback, later ones are counted and dropped).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Mapping, Sequence

    from ._errors import StorageError
    from ._records import JobRecord
    from ._types import Claim

__all__ = ["Observer", "Observers", "SettleOutcome", "count_event"]

log = logging.getLogger("taquba.observe")

SettleOutcome: TypeAlias = Literal["acked", "nacked", "dead_lettered"]
"""How a claim was settled: `Queue.ack`/`ack_with`, `Queue.nack`, or `Queue.dead_letter`."""


class Observer:
    """Base class of queue observers: every method is a no-op; override the ones you need.

    Register observers with ``open_queue(..., observers=[...])`` or `Queue.add_observer`.
    Methods are called synchronously on the queue's trio thread, after the event (after its
    commit, for writes), so they must be quick and must not block; an exception an observer
    raises is logged once and otherwise ignored (the queue goes on). Times are in seconds;
    durations derived from job timestamps use the queue's clock (`Queue.clock`).

    `taquba.prometheus.PrometheusObserver` (extra ``taquba[prometheus]``) and
    `taquba.otel.TracingObserver` (extra ``taquba[otel]``) are ready-made observers.
    """

    def enqueued(self, queue_name: str, jobs: Sequence[JobRecord]) -> None:
        """New jobs were committed to ``queue_name`` (deduplicated ones are not reported).

        Called for `Queue.enqueue`, `Queue.enqueue_batch` and the follow-up enqueues of
        settlements (`Effects`), once per queue per commit.
        """

    def claimed(self, queue_name: str, jobs: Sequence[JobRecord]) -> None:
        """Jobs of ``queue_name`` were claimed (records as claimed: ``claimed_at`` set).

        ``job.claimed_at - job.enqueued_at`` is how long a job waited since it was enqueued
        (including any scheduled delay and earlier attempts).
        """

    def settled(
        self,
        queue_name: str,
        job: JobRecord,
        outcome: SettleOutcome,
        *,
        dead: bool,
        handler_seconds: float,
        latency_seconds: float,
    ) -> None:
        """A claim was settled and the settlement is durable.

        Args:
            queue_name: the job's queue.
            job: the job as it was claimed.
            outcome: which call settled it.
            dead: whether the job is now dead-lettered (a ``"nacked"`` job out of attempts,
                or every ``"dead_lettered"`` one).
            handler_seconds: from the claim to the settlement (the handler's run, plus its
                settlement commit).
            latency_seconds: from the job's enqueue to the settlement (end to end).
        """

    def claim_abandoned(self, queue_name: str, job: JobRecord, *, dead: bool, reason: str) -> None:
        """A claim ended without a settlement: the job was requeued, or dead-lettered (``dead``).

        ``reason`` is ``"lease expired"`` for the reaper, and ``"claim interrupted by
        process exit"`` for the claims of a process that died, ended when the queue opens.
        """

    def promoted(self, count: int) -> None:
        """The scheduler made ``count`` due scheduled jobs (or delayed retries) pending."""

    def reaped(self, count: int) -> None:
        """A reaper pass ended; ``count`` expired claims were requeued or dead-lettered."""

    def swept(self, count: int) -> None:
        """A retention sweep deleted ``count`` kept done and dead records."""

    def committed(self, apply_seconds: float, durable_seconds: float | None) -> None:
        """A transaction committed.

        ``apply_seconds`` is how long applying it took; for a durable commit,
        ``durable_seconds`` is how long its durability wait (the WAL flush to object storage)
        took afterwards (None for a commit that does not wait).
        """

    def storage_error(self, error: StorageError) -> None:
        """A write failed in storage (``type(error).__name__`` is its kind).

        Transient errors (`StorageUnavailable`) are reported too, also those the loops
        retry; failed reads and write conflicts (`conflicted`) are not.
        """

    def conflicted(self) -> None:
        """A transaction commit lost a write conflict; the queue retries it (nothing failed)."""

    def counted(self, name: str, labels: Mapping[str, str], amount: int) -> None:
        """A layer counted an event of its own (`taquba.count_event`).

        ``name`` is a metric-style name (``[a-z_][a-z0-9_]*``, e.g. ``"workflow_runs"``);
        ``labels`` always has the same keys for one ``name``.
        """

    def enqueue_headers(self, queue_name: str, job_id: str) -> Mapping[str, str] | None:
        """Headers to add to job ``job_id`` being enqueued into ``queue_name`` (None: none).

        Called while the enqueue request is checked, in the caller's task (so its context
        variables, e.g. the current trace, are visible); headers the caller set win.
        """
        return None

    def handling(self, claim: Claim) -> contextlib.AbstractContextManager[object]:
        """A context manager `taquba.Worker` enters around a handler run and its settlement.

        Entered and exited in the task that runs the handler, so a span made current here
        (`taquba.otel`) is the parent of the follow-up enqueues of the settlement.
        """
        return contextlib.nullcontext()


def count_event(
    queue: object, name: str, labels: Mapping[str, str] | None = None, amount: int = 1
) -> None:
    """Report a layer's event to the observers of ``queue`` (`Observer.counted`).

    For the layers (workflow runs by state, job results, cron firings, webhook deliveries)
    and for applications: a no-op unless ``queue`` is a `taquba.Queue` with observers (a
    remote queue of taquba-client has none), so it costs one check when unused.

    Args:
        queue: the queue the event belongs to (any `QueueLike`).
        name: a metric-style name, ``[a-z_][a-z0-9_]*``, e.g. ``"cron_firings"``.
        labels: label values; use the same keys every time for one ``name``.
        amount: how many events.
    """
    observers: Observers | None = getattr(queue, "_observers", None)
    if observers is None or not observers.active:
        return
    fixed = dict(labels or {})
    observers.emit("counted", lambda o: o.counted(name, fixed, amount))


class Observers:
    """The observers of one queue, called in registration order (see the module docstring)."""

    __slots__ = ("_failed", "active")

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.active: tuple[Observer, ...] = tuple(observers)
        """The registered observers; call sites skip the dispatch when it is empty."""
        self._failed: dict[int, int] = {}

    def add(self, observer: Observer) -> None:
        """Register ``observer`` (after the others)."""
        self.active = (*self.active, observer)

    def failures(self, observer: Observer) -> int:
        """How many calls of ``observer`` raised."""
        return self._failed.get(id(observer), 0)

    def _raised(self, observer: Observer, method: str) -> None:
        count = self._failed.get(id(observer), 0)
        self._failed[id(observer)] = count + 1
        if count == 0:
            log.exception(
                "observer %r raised in %s (ignored; later failures of it are not logged)",
                observer,
                method,
            )

    def emit(self, method: str, call: Callable[[Observer], object]) -> None:
        """Call ``call(observer)`` for each observer, ignoring (and logging once) failures."""
        for observer in self.active:
            try:
                call(observer)
            except Exception:
                self._raised(observer, method)

    def headers(self, queue_name: str, job_id: str, headers: dict[str, str]) -> None:
        """Add the observers' `Observer.enqueue_headers` to ``headers`` (the caller's win)."""
        for observer in self.active:
            try:
                extra = observer.enqueue_headers(queue_name, job_id)
            except Exception:
                self._raised(observer, "enqueue_headers")
                continue
            if extra:
                for name, value in extra.items():
                    if isinstance(name, str) and isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
                        headers.setdefault(name, value)

    @contextlib.contextmanager
    def handling(self, claim: Claim) -> Generator[None]:
        """Enter every observer's `Observer.handling` around the block (failures ignored)."""
        with contextlib.ExitStack() as stack:
            for observer in self.active:
                try:
                    manager = observer.handling(claim)
                    manager.__enter__()
                except Exception:
                    self._raised(observer, "handling")
                    continue
                stack.push(self._exit_of(observer, manager))
            yield

    def _exit_of(
        self, observer: Observer, manager: contextlib.AbstractContextManager[object]
    ) -> Callable[..., bool]:
        """The exit callback of one observer's manager: it never raises nor swallows."""

        def exit_(*exc_info: object) -> bool:
            try:
                manager.__exit__(*exc_info)  # pyright: ignore[reportArgumentType]
            except Exception:
                self._raised(observer, "handling")
            return False

        return exit_
