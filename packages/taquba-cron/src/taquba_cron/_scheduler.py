"""`Scheduler`: the loop that enqueues each schedule's firings exactly once per fire time."""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

import taquba
from taquba import (
    EnqueueRequest,
    InvalidArgument,
    JobStatus,
    KvConflict,
    StorageError,
    TaqubaError,
    UsageError,
)

from ._errors import DuplicateName, UnknownSchedule
from ._policy import Overlap, State, plan
from ._schedule import Schedule
from ._timing import to_instant

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime

    from taquba import QueueLike

__all__ = ["STATE_KEY_PREFIX", "ScheduleStatus", "Scheduler", "dedup_key", "state_key"]

log = logging.getLogger("taquba_cron")

STATE_KEY_PREFIX: Final = b"cron/state/"
"""The user-KV prefix of the schedules' durable state: ``cron/state/<name>`` (UTF-8)."""

_MAX_BACKOFF: Final = 60.0
# A job in one of these states is unfinished for the overlap policies; done, dead and deleted
# (an acknowledged job without keep_done) are finished.
_UNFINISHED: Final = frozenset({JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.CLAIMED})


def state_key(name: str) -> bytes:
    """The user-KV key holding the durable state of schedule ``name``."""
    return STATE_KEY_PREFIX + name.encode()


def dedup_key(name: str, fire_ms: int) -> str:
    """The dedup key of the job schedule ``name`` enqueues for the fire time ``fire_ms``."""
    return f"cron:{name}:{fire_ms}"


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """What `Scheduler.status` reports about one schedule."""

    name: str
    """The schedule's name."""
    paused: bool
    """Whether the schedule is paused."""
    last_fire: datetime | None
    """The fire time of the last job enqueued (in the schedule's zone), None before the first."""
    next_fire: datetime | None
    """The next fire time that will be enqueued if a scheduler runs; None while paused."""
    buffered_fire: datetime | None = None
    """A fire time held until the previous job finishes (`Overlap.BUFFER_ONE`), if any."""


class Scheduler:
    """Runs schedules against one queue: each fire time is enqueued exactly once.

    Exactly once holds across restarts and with several `Scheduler` instances racing on the
    same `taquba.Queue`: each schedule keeps a durable watermark in the queue's user KV (under
    `STATE_KEY_PREFIX`), and every enqueue commits together with the watermark's advance,
    conditional on the watermark it read (`taquba.Queue.enqueue_batch` with ``kv_expect`` and
    ``kv_writes``). An instance that loses the race gets `taquba.KvConflict`, re-reads and finds
    the firing done. Each job also carries the dedup key `dedup_key` (``cron:<name>:<fire_ms>``).

    Schedules with an `Overlap` policy other than `Overlap.ALLOW` read the job of their previous
    firing with `taquba.Queue.get_job` when a firing falls due (and every poll while a firing is
    held for `Overlap.BUFFER_ONE`).

    It follows the family convention for long-running components: start it with
    ``await nursery.start(scheduler.serve)``, stop it gracefully with `shutdown`, or hard-stop
    it by cancelling the scope around `serve`::

        scheduler = Scheduler(queue, schedules)
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
            ...
            scheduler.shutdown()

    Time comes from ``queue.clock``. `serve` sleeps until the next fire time but wakes at least
    every ``poll_interval`` to re-read the clock, so a `taquba.MockClock` advanced by a test is
    noticed within one interval; tests may also call `fire_due` directly.

    Args:
        queue: the queue whose clock drives firing, whose user KV holds the watermarks, and
            onto which the jobs are enqueued (each schedule names its target queue with
            ``queue_name``): a `taquba.Queue`, or any `taquba.QueueLike` (such as a remote
            queue whose owner is another process).
        schedules: the schedules; names must be unique (`DuplicateName`).
        poll_interval: the longest `serve` sleeps between readings of the clock, in seconds.
        batch_size: the most jobs one transaction enqueues when catching up (backfill).
        shutdown_grace: after `shutdown`, seconds the firing in flight (at most one
            transaction, and the reads before it) gets to finish before it is cancelled.
            None (the default) or ``math.inf``: wait as long as it takes. Cancelling a firing
            loses nothing: its jobs and its watermark commit together or not at all.

    Raises:
        DuplicateName: two schedules share a name.
        taquba.InvalidArgument: ``schedules`` holds something other than a `Schedule`, or
            ``poll_interval``, ``batch_size`` or ``shutdown_grace`` is out of range.
    """

    def __init__(
        self,
        queue: QueueLike,
        schedules: Iterable[Schedule],
        *,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        shutdown_grace: float | None = None,
    ) -> None:
        """Check the arguments and build the scheduler; nothing runs until `serve`."""
        by_name: dict[str, Schedule] = {}
        for schedule in schedules:
            if not isinstance(schedule, Schedule):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InvalidArgument("schedules", schedule, "must hold only Schedule objects")
            if schedule.name in by_name:
                raise DuplicateName(schedule.name)
            by_name[schedule.name] = schedule
        if (
            not isinstance(poll_interval, (int, float))  # pyright: ignore[reportUnnecessaryIsInstance]
            or isinstance(poll_interval, bool)
            or not math.isfinite(poll_interval)
            or poll_interval <= 0
        ):
            raise InvalidArgument(
                "poll_interval", poll_interval, "must be a positive, finite number of seconds"
            )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidArgument("batch_size", batch_size, "must be an int >= 1")
        self._queue = queue
        self._schedules = by_name
        self._poll_interval = float(poll_interval)
        self._batch_size = batch_size
        self._grace = _check_grace(shutdown_grace)
        self._stop = trio.Event()
        self._serving = False
        self._firing: trio.CancelScope | None = None

    @property
    def queue(self) -> QueueLike:
        """The queue this scheduler works against."""
        return self._queue

    @property
    def schedules(self) -> Mapping[str, Schedule]:
        """The schedules, by name, in the order given."""
        return types.MappingProxyType(self._schedules)

    def _schedule(self, name: str) -> Schedule:
        try:
            return self._schedules[name]
        except KeyError:
            raise UnknownSchedule(name) from None

    # ------------------------------------------------------------------ firing

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Enqueue firings as they fall due, until `shutdown` is called or the scope is cancelled.

        Start it with ``await nursery.start(scheduler.serve)``: it reports started once every
        schedule has its durable state and whatever was due at start-up has been handled
        (including missed firings, per each schedule's policy). After `shutdown` it fires
        nothing new: the firing in progress (its reads and its one transaction) completes,
        within ``shutdown_grace``, and `serve` returns. A backfill stops between batches; the
        watermark says where the next `serve` resumes. Cancelling the surrounding scope is the
        hard stop, and loses nothing either: a firing's jobs and watermark commit together.
        A scheduler that has been shut down returns at once when served again.

        Returns:
            None, after a graceful shutdown (`shutdown`).

        Error handling: an error confined to one schedule (a failing payload factory
        (`PayloadError`), unreadable stored state (`CorruptState`), a transient storage error
        such as `taquba.StorageUnavailable`) is logged on the ``taquba_cron`` logger, and that
        schedule is retried with a capped exponential backoff (from ``poll_interval`` up to
        60 s) while the others carry on; the firing stays due meanwhile. A permanent storage
        error (`taquba.Fenced`, `taquba.QueueClosed`, `taquba.StorageFatal`,
        `taquba.StorageMisconfigured`, any `taquba.StorageError` whose ``transient`` is
        false) ends `serve` and is raised as itself.

        Raises:
            taquba.UsageError: this scheduler is already serving (one `serve` at a time).
        """
        if self._serving:
            raise UsageError("this Scheduler is already serving; one serve at a time")
        self._serving = True
        try:
            await self._serve(task_status)
        finally:
            self._serving = False
            self._firing = None

    def shutdown(self) -> None:
        """Stop firing; `serve` returns once the firing in flight is done (``shutdown_grace``).

        Idempotent and sticky; safe to call before `serve` starts (it then returns at once),
        from any task of the same trio run (from another thread, use
        ``trio.from_thread.run_sync(scheduler.shutdown)``).
        """
        self._stop.set()
        firing = self._firing
        if firing is not None and self._grace is not None:
            firing.deadline = min(firing.deadline, trio.current_time() + self._grace)

    @property
    def shutting_down(self) -> bool:
        """Whether `shutdown` has been called."""
        return self._stop.is_set()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        clock = self._queue.clock
        stop = self._stop
        due: dict[str, int | None] = dict.fromkeys(self._schedules)
        failures: dict[str, int] = {}
        started = False
        while not stop.is_set():
            with trio.CancelScope() as firing:
                self._firing = firing
                await self._pass(due, failures)
            self._firing = None
            if firing.cancelled_caught:  # only shutdown sets its deadline
                log.warning("shutdown_grace expired: the firing in flight was cancelled")
                break
            if not started:
                task_status.started()
                started = True
            # A schedule due at or before now (a buffered firing waiting for the previous job)
            # is looked at again after the poll interval.
            current = clock.now_ms()
            wake = min((at for at in due.values() if at is not None and at > current), default=None)
            delay = self._poll_interval
            if wake is not None:
                delay = min(delay, (wake - current) / 1000)
            with trio.move_on_after(delay):
                await stop.wait()
        if not started:
            task_status.started()  # shut down before (or during) the first pass

    async def _pass(self, due: dict[str, int | None], failures: dict[str, int]) -> None:
        """Handle what is due for every schedule, once; stop early on shutdown."""
        now = self._queue.clock.now_ms()
        for name, schedule in self._schedules.items():
            if self._stop.is_set():
                return
            at = due[name]
            if at is not None and at > now:
                continue
            try:
                _, due[name] = await self._catch_up(schedule, now, self._stop)
            except TaqubaError as exc:
                if isinstance(exc, StorageError) and not exc.transient:
                    raise  # Fenced, QueueClosed, StorageFatal, a misconfigured store: fatal
                count = failures[name] = failures.get(name, 0) + 1
                backoff = min(self._poll_interval * 2 ** (count - 1), _MAX_BACKOFF)
                log.warning(
                    "schedule %r failed (attempt %d), retrying in %.3g s: %s",
                    name,
                    count,
                    backoff,
                    exc,
                )
                due[name] = now + math.ceil(backoff * 1000)
            else:
                failures.pop(name, None)

    async def fire_due(self) -> int:
        """Enqueue everything due now (by ``queue.clock``) for every schedule, once.

        Handles missed firings per each schedule's policy and creates the durable state of
        schedules seen for the first time (their first fire time is the next one after now).
        Returns the number of jobs created. Errors are raised, not logged: this is the step
        `serve` repeats, exposed for tests and for callers that drive time themselves. It does
        not look at `shutdown`.

        Raises:
            PayloadError: a payload factory failed; later schedules were not processed.
            CorruptState: a schedule's stored state is unreadable.
        """
        now = self._queue.clock.now_ms()
        created = 0
        for schedule in self._schedules.values():
            count, _ = await self._catch_up(schedule, now)
            created += count
        return created

    async def _catch_up(
        self, schedule: Schedule, now: int, stop: trio.Event | None = None
    ) -> tuple[int, int | None]:
        """Handle everything due for ``schedule`` at ``now``; return (created, next due).

        With ``stop``, return early once it is set, between transactions: each transaction
        (one batch of firings and the watermark's advance) commits whole or not at all.
        """
        queue = self._queue
        key = state_key(schedule.name)
        created = 0
        while True:
            if stop is not None and stop.is_set():
                return created, now
            raw = await queue.kv_get(key)
            if raw is None:
                initial = State(now, None).encode()
                if not await queue.kv_compare_and_set(key, None, initial):
                    continue  # another instance created it first
                raw = initial
            state = State.decode(schedule.name, raw)
            busy = await self._busy(schedule, state, now)
            job_id = None if schedule.overlap is Overlap.ALLOW else _new_job_id()
            step = plan(
                state,
                now,
                next_after=schedule.next_fire_after_ms,
                prev_at_or_before=schedule.prev_fire_at_or_before_ms,
                missed=schedule.missed,
                grace_ms=math.ceil(schedule.grace * 1000),
                lookback_ms=math.ceil(schedule.lookback * 1000),
                limit=self._batch_size,
                overlap=schedule.overlap,
                busy=busy,
                job_id=job_id,
            )
            if step is None:
                return created, self._next_due(schedule, state, now)
            new = step.state.encode()
            if step.fires:
                requests = self._requests(schedule, step.fires, state.last, job_id)
                try:
                    results = await queue.enqueue_batch(
                        requests, kv_expect={key: raw}, kv_writes={key: new}
                    )
                except KvConflict:
                    continue  # another instance (or a pause) moved the state: re-read
                made = sum(result.created for result in results)
                created += made
                labels = {"schedule": schedule.name, "outcome": "enqueued"}
                taquba.count_event(queue, "cron_firings", labels, made)
                if made < len(results):  # a rolled-back watermark fired again: deduplicated
                    labels = {"schedule": schedule.name, "outcome": "deduplicated"}
                    taquba.count_event(queue, "cron_firings", labels, len(results) - made)
                log.debug("schedule %r enqueued fire times %s", schedule.name, step.fires)
                if job_id is not None and results[-1].id != job_id:
                    # A dedup hit (a rolled-back watermark): track the job that holds the key.
                    fixed = dataclasses.replace(step.state, job=results[-1].id)
                    await queue.kv_compare_and_set(key, new, fixed.encode())
            elif not await queue.kv_compare_and_set(key, raw, new):
                continue
            else:
                log.info("schedule %r skipped firings up to %d", schedule.name, now)
                taquba.count_event(queue, "cron_skips", {"schedule": schedule.name})
            if not step.more:
                return created, self._next_due(schedule, step.state, now)

    async def _busy(self, schedule: Schedule, state: State, now: int) -> bool:
        """Whether the job of the schedule's previous firing is unfinished, when that matters."""
        if schedule.overlap is Overlap.ALLOW or state.job is None or state.paused:
            return False
        if state.buffered is None:
            first = schedule.next_fire_after_ms(state.through) if now > state.through else None
            if first is None or first > now:
                return False  # nothing is due: no need to look
        record = await self._queue.get_job(state.job)
        return record is not None and record.status in _UNFINISHED

    def _next_due(self, schedule: Schedule, state: State, now: int) -> int | None:
        if state.buffered is not None and not state.paused:
            return now  # look again at the next pass whether the previous job has finished
        return schedule.next_fire_after_ms(now if state.paused else max(state.through, now))

    def _requests(
        self, schedule: Schedule, fires: list[int], previous: int | None, job_id: str | None
    ) -> list[EnqueueRequest]:
        requests: list[EnqueueRequest] = []
        for index, fire in enumerate(fires):
            moment = _local(schedule, fire)
            headers = dict(schedule.headers)
            headers["cron.schedule"] = schedule.name
            headers["cron.fire_ms"] = str(fire)
            headers["cron.fire_time"] = moment.isoformat()
            if previous is not None:
                headers["cron.previous_fire_ms"] = str(previous)
            requests.append(
                EnqueueRequest(
                    queue_name=schedule.queue_name,
                    payload=schedule.encode_payload(moment),
                    priority=schedule.priority,
                    dedup_key=dedup_key(schedule.name, fire),
                    headers=headers,
                    max_attempts=schedule.max_attempts,
                    job_id=job_id if index == len(fires) - 1 else None,
                )
            )
            previous = fire
        return requests

    # ------------------------------------------------------------------ inspection

    def next_fire_times(self, name: str, n: int = 1) -> list[datetime]:
        """The next ``n`` fire times of schedule ``name`` after now (``queue.clock``).

        Computed from the expression alone (see `Schedule.next_fire_times`): a paused schedule
        lists them too.

        Raises:
            UnknownSchedule: no schedule has this name.
        """
        schedule = self._schedule(name)
        now = to_instant(self._queue.clock.now_ms())
        return schedule.next_fire_times(now, n)

    async def status(self, name: str) -> ScheduleStatus:
        """The stored state of schedule ``name``, and its next fire time.

        Raises:
            UnknownSchedule: no schedule has this name.
            CorruptState: its stored state is unreadable.
        """
        schedule = self._schedule(name)
        now = self._queue.clock.now_ms()
        raw = await self._queue.kv_get(state_key(name))
        state = State.decode(name, raw) if raw is not None else State(now, None)
        next_fire = None if state.paused else schedule.next_fire_after_ms(max(state.through, now))
        return ScheduleStatus(
            name=name,
            paused=state.paused,
            last_fire=None if state.last is None else _local(schedule, state.last),
            next_fire=None if next_fire is None else _local(schedule, next_fire),
            buffered_fire=None if state.buffered is None else _local(schedule, state.buffered),
        )

    # ------------------------------------------------------------------ pause and resume

    async def pause(self, name: str) -> None:
        """Pause schedule ``name``, durably, for every scheduler of this queue.

        A paused schedule enqueues nothing. Pausing a paused schedule does nothing.

        Raises:
            UnknownSchedule: no schedule has this name.
        """
        await self._set_paused(name, paused=True)

    async def resume(self, name: str) -> None:
        """Resume schedule ``name``; it fires again from its next fire time after now.

        Firings that fell due while it was paused are skipped, whatever its missed-run policy.
        Resuming a schedule that is not paused does nothing.

        Raises:
            UnknownSchedule: no schedule has this name.
        """
        await self._set_paused(name, paused=False)

    async def _set_paused(self, name: str, *, paused: bool) -> None:
        self._schedule(name)
        key = state_key(name)
        while True:
            now = self._queue.clock.now_ms()
            raw = await self._queue.kv_get(key)
            state = State.decode(name, raw) if raw is not None else State(now, None)
            if raw is not None and state.paused == paused:
                return
            through = state.through if paused else max(state.through, now)
            new = dataclasses.replace(state, through=through, paused=paused)
            if await self._queue.kv_compare_and_set(key, raw, new.encode()):
                log.info("schedule %r %s", name, "paused" if paused else "resumed")
                return


def _new_job_id() -> str:
    """A fresh id for a tracked job, chosen before the enqueue so the state can name it."""
    return f"cron-{secrets.token_hex(16)}"


def _local(schedule: Schedule, ms: int) -> datetime:
    return to_instant(ms).astimezone(schedule.zone)


def _check_grace(value: object) -> float | None:
    """``shutdown_grace`` checked: None (no limit; ``math.inf`` too) or seconds >= 0."""
    if value is None:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or math.isnan(value)
        or value < 0
    ):
        raise InvalidArgument("shutdown_grace", value, "must be None or a number of seconds >= 0")
    return None if math.isinf(value) else float(value)
