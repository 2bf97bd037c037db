"""`Scheduler`: the loop that enqueues each schedule's firings exactly once per fire time."""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from taquba import (
    EnqueueRequest,
    Fenced,
    JobStatus,
    KvConflict,
    QueueClosed,
    StorageFatal,
    TaqubaError,
)

from ._errors import CronError, DuplicateName, InvalidSchedule, PayloadError, UnknownSchedule
from ._policy import Overlap, State, plan
from ._schedule import Schedule
from ._timing import to_instant

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime

    from taquba import Queue

__all__ = ["STATE_KEY_PREFIX", "ScheduleStatus", "Scheduler", "dedup_key", "state_key"]

log = logging.getLogger("taquba_cron")

STATE_KEY_PREFIX: Final = b"cron/state/"
"""The user-KV prefix of the schedules' durable state: ``cron/state/<name>`` (UTF-8)."""

_MAX_BACKOFF: Final = 60.0
_FATAL: Final = (Fenced, QueueClosed, StorageFatal)
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

    Time comes from ``queue.clock``. `run` sleeps until the next fire time but wakes at least
    every ``poll_interval`` to re-read the clock, so a `taquba.MockClock` advanced by a test is
    noticed within one interval; tests may also call `fire_due` directly.

    Args:
        queue: the queue whose clock drives firing, whose user KV holds the watermarks, and
            onto which the jobs are enqueued (each schedule names its target queue).
        schedules: the schedules; names must be unique (`DuplicateName`).
        poll_interval: the longest `run` sleeps between readings of the clock, in seconds.
        batch_size: the most jobs one transaction enqueues when catching up (backfill).

    Raises:
        DuplicateName: two schedules share a name.
        InvalidSchedule: ``poll_interval`` or ``batch_size`` is out of range.
    """

    def __init__(
        self,
        queue: Queue,
        schedules: Iterable[Schedule],
        *,
        poll_interval: float = 1.0,
        batch_size: int = 100,
    ) -> None:
        by_name: dict[str, Schedule] = {}
        for schedule in schedules:
            if not isinstance(schedule, Schedule):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InvalidSchedule(f"expected a Schedule, got {type(schedule).__name__}")
            if schedule.name in by_name:
                raise DuplicateName(schedule.name)
            by_name[schedule.name] = schedule
        if not math.isfinite(poll_interval) or poll_interval <= 0:
            raise InvalidSchedule("poll_interval must be a positive number of seconds")
        if not isinstance(batch_size, int) or batch_size < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidSchedule("batch_size must be a positive int")
        self._queue = queue
        self._schedules = by_name
        self._poll_interval = poll_interval
        self._batch_size = batch_size

    @property
    def queue(self) -> Queue:
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

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Enqueue firings as they fall due, forever.

        Start it with ``await nursery.start(scheduler.run)``: it reports started once every
        schedule has its durable state and whatever was due at start-up has been handled
        (including missed firings, per each schedule's policy). Cancel the scope to stop it.

        An error confined to one schedule (a failing payload factory, a storage hiccup) is
        logged and that schedule is retried with a backoff (up to 60 s) while the others carry
        on. `taquba.Fenced`, `taquba.QueueClosed` and `taquba.StorageFatal` stop the loop.
        """
        clock = self._queue.clock
        due: dict[str, int | None] = dict.fromkeys(self._schedules)
        failures: dict[str, int] = {}
        started = False
        while True:
            now = clock.now_ms()
            for name, schedule in self._schedules.items():
                at = due[name]
                if at is not None and at > now:
                    continue
                try:
                    _, due[name] = await self._catch_up(schedule, now)
                except _FATAL:
                    raise
                except (CronError, TaqubaError) as exc:
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
            await trio.sleep(delay)

    async def fire_due(self) -> int:
        """Enqueue everything due now (by ``queue.clock``) for every schedule, once.

        Handles missed firings per each schedule's policy and creates the durable state of
        schedules seen for the first time (their first fire time is the next one after now).
        Returns the number of jobs created. Errors are raised, not logged: this is the step
        `run` repeats, exposed for tests and for callers that drive time themselves.

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

    async def _catch_up(self, schedule: Schedule, now: int) -> tuple[int, int | None]:
        """Handle everything due for ``schedule`` at ``now``; return (created, next due)."""
        queue = self._queue
        key = state_key(schedule.name)
        created = 0
        while True:
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
                created += sum(result.created for result in results)
                log.debug("schedule %r enqueued fire times %s", schedule.name, step.fires)
                if job_id is not None and results[-1].id != job_id:
                    # A dedup hit (a rolled-back watermark): track the job that holds the key.
                    fixed = dataclasses.replace(step.state, job=results[-1].id)
                    await queue.kv_compare_and_set(key, new, fixed.encode())
            elif not await queue.kv_compare_and_set(key, raw, new):
                continue
            else:
                log.info("schedule %r skipped firings up to %d", schedule.name, now)
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
                    queue=schedule.queue,
                    payload=_payload(schedule, fire, moment),
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


def _payload(schedule: Schedule, fire: int, moment: datetime) -> bytes:
    factory = schedule.payload_factory
    if factory is None:
        return schedule.payload
    try:
        payload = factory(moment)
    except Exception as exc:
        raise PayloadError(schedule.name, fire, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, (bytes, bytearray, memoryview)):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise PayloadError(schedule.name, fire, f"returned {type(payload).__name__}, not bytes")
    return bytes(payload)
