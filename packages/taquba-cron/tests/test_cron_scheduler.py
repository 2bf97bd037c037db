"""The scheduler against real queues (memory store) driven by a MockClock."""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing

import taquba
from taquba import JobRecord, JobStatus, LeaseHandle, MockClock, Store
from taquba.testing import drain, open_test_queue
from taquba_cron import (
    STATE_KEY_PREFIX,
    CorruptState,
    Missed,
    Overlap,
    PayloadError,
    Schedule,
    Scheduler,
    UnknownSchedule,
)

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
START_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)  # the clock fixture's start


async def pending(queue: taquba.Queue, name: str = "q") -> list[JobRecord]:
    jobs: list[JobRecord] = []
    cursor: bytes | None = None
    while True:
        page = await queue.list_jobs(name, JobStatus.PENDING, cursor=cursor, limit=500)
        jobs += page.jobs
        if page.next_cursor is None:
            return jobs
        cursor = page.next_cursor


def fire_times(jobs: list[JobRecord], schedule: str | None = None) -> list[int]:
    return sorted(
        int(job.headers["cron.fire_ms"])
        for job in jobs
        if schedule is None or job.headers["cron.schedule"] == schedule
    )


async def wait_for_pending(queue: taquba.Queue, count: int) -> None:
    """Wait until ``queue`` holds ``count`` pending jobs on "q" (a scheduler loop is working).

    The loops under test wake on their poll interval, not on an event a test could wait for,
    so polling is the honest way to observe them.
    """
    with trio.fail_after(10):
        while len(await pending(queue)) < count:  # noqa: ASYNC110
            await trio.sleep(0.005)


def advance_to(clock: MockClock, ms: int) -> None:
    clock.advance((ms - clock.now_ms()) / 1000)


def expected_fires(schedule: Schedule, start: int, end: int) -> list[int]:
    found: list[int] = []
    instant = start
    while (fire := schedule.next_fire_after_ms(instant)) is not None and fire <= end:
        found.append(fire)
        instant = fire
    return found


async def test_fires_each_fire_time_once_with_headers_and_options(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedule = Schedule(
        "ten",
        "*/10 * * * *",
        "q",
        payload=b"tick",
        priority=7,
        max_attempts=2,
        headers={"team": "ops"},
    )
    scheduler = Scheduler(queue, [schedule])
    assert await scheduler.fire_due() == 0  # first sight: the state starts now
    clock.advance(10 * 60 + 1)
    assert await scheduler.fire_due() == 1
    assert await scheduler.fire_due() == 0  # same instant: nothing more is due
    clock.advance(10 * 60)
    assert await scheduler.fire_due() == 1
    first, second = sorted(await pending(queue), key=lambda job: job.headers["cron.fire_ms"])
    fire = START_MS + 10 * MINUTE
    assert first.payload == b"tick"
    assert (first.priority, first.max_attempts) == (7, 2)
    assert first.dedup_key == f"cron:ten:{fire}"
    assert dict(first.headers) == {
        "team": "ops",
        "cron.schedule": "ten",
        "cron.fire_ms": str(fire),
        "cron.fire_time": "2026-01-01T00:10:00+00:00",
    }
    assert second.headers["cron.fire_ms"] == str(fire + 10 * MINUTE)
    assert second.headers["cron.previous_fire_ms"] == str(fire)


async def test_a_fire_time_equal_to_the_first_start_is_not_fired(
    queue: taquba.Queue, clock: MockClock
) -> None:
    scheduler = Scheduler(queue, [Schedule("h", "@hourly", "q")])
    assert await scheduler.fire_due() == 0  # START is exactly midnight: before the schedule
    clock.advance(3600)
    assert await scheduler.fire_due() == 1


async def test_payload_factory_receives_the_fire_time_in_the_schedule_zone(
    queue: taquba.Queue, clock: MockClock
) -> None:
    seen: list[datetime] = []

    def factory(fire: datetime) -> bytes:
        seen.append(fire)
        return fire.isoformat().encode()

    schedule = Schedule("paris", "0 9 * * *", "q", tz="Europe/Paris", payload_factory=factory)
    scheduler = Scheduler(queue, [schedule])
    await scheduler.fire_due()
    advance_to(clock, START_MS + 8 * HOUR)  # 09:00 in Paris (UTC+1)
    assert await scheduler.fire_due() == 1
    (job,) = await pending(queue)
    assert job.payload == b"2026-01-01T09:00:00+01:00"
    assert seen == [datetime(2026, 1, 1, 9, tzinfo=ZoneInfo("Europe/Paris"))]
    assert job.headers["cron.fire_time"] == "2026-01-01T09:00:00+01:00"


async def test_a_failing_payload_factory_leaves_the_firing_due(
    queue: taquba.Queue, clock: MockClock
) -> None:
    calls = 0

    def flaky(fire: datetime) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database down")
        return b"ok"

    scheduler = Scheduler(queue, [Schedule("f", "@hourly", "q", payload_factory=flaky)])
    await scheduler.fire_due()
    clock.advance(3600)
    with pytest.raises(PayloadError) as info:
        await scheduler.fire_due()
    assert info.value.schedule == "f"
    assert info.value.fire_ms == START_MS + HOUR
    assert isinstance(info.value.__cause__, RuntimeError)
    assert await pending(queue) == []
    assert await scheduler.fire_due() == 1
    assert fire_times(await pending(queue)) == [START_MS + HOUR]


async def test_a_payload_factory_must_return_its_payload_type(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedules = [
        Schedule("bytes", "@hourly", "q", payload_factory=lambda fire: "text"),
        Schedule("typed", "@hourly", "q", payload_factory=lambda fire: b"raw", payload_type=Tick),
    ]
    await Scheduler(queue, schedules).fire_due()
    clock.advance(3600)
    with pytest.raises(PayloadError, match="not bytes") as info:
        await Scheduler(queue, schedules[:1]).fire_due()
    assert isinstance(info.value.__cause__, taquba.TypeMismatch)
    with pytest.raises(PayloadError, match="expected Tick") as info:
        await Scheduler(queue, schedules[1:]).fire_due()
    assert isinstance(info.value.__cause__, taquba.TypeMismatch)
    assert await pending(queue) == []


@dataclass(frozen=True)
class Tick:
    schedule: str
    at: datetime


async def test_typed_payloads_are_encoded_with_the_codec(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedules = [
        Schedule("fixed", "@hourly", "q", payload={"kind": "daily"}),
        Schedule(
            "built",
            "@hourly",
            "q",
            payload_factory=lambda fire: Tick("built", fire),
            payload_type=Tick,
            tz="Europe/Paris",
        ),
    ]
    scheduler = Scheduler(queue, schedules)
    await scheduler.fire_due()
    clock.advance(3600)
    assert await scheduler.fire_due() == 2
    jobs = {job.headers["cron.schedule"]: job for job in await pending(queue)}
    assert taquba.Codec(dict[str, str]).decode(jobs["fixed"].payload) == {"kind": "daily"}
    tick = taquba.Codec(Tick).decode(jobs["built"].payload)
    assert tick == Tick("built", datetime(2026, 1, 1, 2, tzinfo=ZoneInfo("Europe/Paris")))


async def test_two_racing_schedulers_enqueue_each_fire_time_exactly_once(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedules = [
        Schedule("every-5m", "*/5 * * * *", "q"),
        Schedule("seconds", "*/20 * * * * *", "q", missed=Missed.BACKFILL),
        Schedule("ny", "7,37 * * * *", "q", tz="America/New_York", missed=Missed.COALESCE),
    ]
    a, b = Scheduler(queue, schedules), Scheduler(queue, schedules, batch_size=3)
    created = 0
    for _ in range(60):
        async with trio.open_nursery() as nursery:

            async def fire(scheduler: Scheduler) -> None:
                nonlocal created
                count = await scheduler.fire_due()
                created += count

            nursery.start_soon(fire, a)
            nursery.start_soon(fire, b)
        clock.advance(37)  # steps shorter than the grace: no firing is ever missed
    jobs = await pending(queue)
    assert created == len(jobs)
    for schedule in schedules:
        got = fire_times(jobs, schedule.name)
        assert got == expected_fires(schedule, START_MS, clock.now_ms() - 37_000)
    assert not [key for key, n in Counter(job.dedup_key for job in jobs).items() if n > 1]


class StaleReads:
    """A real queue whose first ``kv_get`` result is held back until ``release`` is set.

    Not a mock: every call reaches the real queue. It lets a test make one scheduler instance
    act on a state it read before another instance's commit, the race the watermark's
    compare-and-set exists for.
    """

    def __init__(self, queue: taquba.Queue) -> None:
        self._queue = queue
        self.read = trio.Event()
        self.release = trio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._queue, name)

    async def kv_get(self, key: bytes) -> bytes | None:
        value = await self._queue.kv_get(key)
        if not self.release.is_set():
            self.read.set()
            await self.release.wait()
        return value


async def test_a_stale_instance_loses_the_compare_and_set_even_without_dedup(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedule = Schedule("s", "@hourly", "q")
    stale = StaleReads(queue)
    fresh, late = Scheduler(queue, [schedule]), Scheduler(stale, [schedule])  # type: ignore[arg-type]
    await fresh.fire_due()
    clock.advance(3600 + 1)
    handled: list[int] = []

    async def record(job: JobRecord, lease: LeaseHandle) -> None:
        handled.append(int(job.headers["cron.fire_ms"]))

    late_created: list[int] = []
    async with trio.open_nursery() as nursery:

        async def run_late() -> None:
            late_created.append(await late.fire_due())

        nursery.start_soon(run_late)
        await stale.read.wait()  # the late instance has read the old watermark
        assert await fresh.fire_due() == 1
        assert await drain(queue, "q", record) == 1  # claimed and acked: dedup key released
        stale.release.set()
    assert late_created == [0]
    assert handled == [START_MS + HOUR]
    assert await pending(queue) == []


async def test_racing_schedulers_rely_on_the_watermark_not_only_on_dedup_keys(
    queue: taquba.Queue, clock: MockClock
) -> None:
    # Jobs are consumed as soon as they appear, which releases their dedup keys: only the
    # watermark's compare-and-set keeps a second instance from enqueuing a fire time again.
    schedule = Schedule("s", "*/10 * * * * *", "q", missed=Missed.BACKFILL)
    instances = [Scheduler(queue, [schedule], batch_size=2) for _ in range(3)]
    handled: list[int] = []

    async def record(job: JobRecord, lease: LeaseHandle) -> None:
        handled.append(int(job.headers["cron.fire_ms"]))

    await instances[0].fire_due()  # the schedule starts at START
    for _ in range(30):
        clock.advance(25)
        async with trio.open_nursery() as nursery:
            for instance in instances:
                nursery.start_soon(instance.fire_due)
                nursery.start_soon(drain, queue, "q", record)
        await drain(queue, "q", record)
    assert sorted(handled) == expected_fires(schedule, START_MS, clock.now_ms())


async def test_racing_run_loops_enqueue_each_fire_time_exactly_once(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedules = [Schedule("m", "* * * * *", "q"), Schedule("s", "*/30 * * * * *", "q")]
    loops = [Scheduler(queue, schedules, poll_interval=0.002) for _ in range(2)]
    async with trio.open_nursery() as nursery:
        for loop in loops:
            await nursery.start(loop.serve)
        for _ in range(6):
            clock.advance(60)
            now = clock.now_ms()
            await wait_for_pending(
                queue, sum(len(expected_fires(s, START_MS, now)) for s in schedules)
            )
        await trio.sleep(0.05)  # let both loops look again: nothing more appears
        for loop in loops:
            loop.shutdown()
    jobs = await pending(queue)
    assert fire_times(jobs, "m") == expected_fires(schedules[0], START_MS, clock.now_ms())
    assert fire_times(jobs, "s") == expected_fires(schedules[1], START_MS, clock.now_ms())


async def test_serve_reports_started_once_every_state_exists(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedules = [Schedule("a", "@daily", "q"), Schedule("b", "@hourly", "q")]
    scheduler = Scheduler(queue, schedules)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        page = await queue.kv_scan(STATE_KEY_PREFIX)
        assert [key for key, _ in page.entries] == [b"cron/state/a", b"cron/state/b"]
        scheduler.shutdown()


@pytest.mark.parametrize("missed", list(Missed))
async def test_restart_neither_duplicates_nor_loses_firings(
    store: Store, clock: MockClock, missed: Missed
) -> None:
    schedule = Schedule("h", "0 * * * *", "q", missed=missed, lookback=3 * 3600)
    async with open_test_queue(store, clock=clock) as queue, trio.open_nursery() as nursery:
        scheduler = Scheduler(queue, [schedule], poll_interval=0.002)
        await nursery.start(scheduler.serve)
        for hour in range(1, 4):
            clock.advance(3600)
            await wait_for_pending(queue, hour)
        nursery.cancel_scope.cancel()  # the hard stop, as a crash would
    clock.advance(5 * 3600 + 120)  # down from 03:00 to 08:02: 04:00 ... 08:00 are missed
    async with open_test_queue(store, clock=clock) as queue:
        scheduler = Scheduler(queue, [schedule], poll_interval=0.002)
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)  # started: what was due is handled
            scheduler.shutdown()
        jobs = await pending(queue)
    before = [START_MS + h * HOUR for h in (1, 2, 3)]
    after = {
        Missed.SKIP: [],  # 08:00 is 120 s late, beyond the 60 s grace
        Missed.COALESCE: [START_MS + 8 * HOUR],
        Missed.BACKFILL: [START_MS + h * HOUR for h in (6, 7, 8)],  # within the 3 h lookback
    }[missed]
    assert fire_times(jobs) == before + after
    if after:
        latest = max(jobs, key=lambda job: int(job.headers["cron.fire_ms"]))
        previous = after[-2] if len(after) > 1 else before[-1]
        assert latest.headers["cron.previous_fire_ms"] == str(previous)


async def test_a_lost_watermark_is_covered_by_the_dedup_key(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedule = Schedule("d", "@hourly", "q", missed=Missed.BACKFILL)
    scheduler = Scheduler(queue, [schedule])
    await scheduler.fire_due()
    clock.advance(3600)
    assert await scheduler.fire_due() == 1
    # Roll the watermark back (a restored backup, a hand edit): the pending job's dedup key
    # still prevents a second job for the same fire time, and the watermark moves on.
    await queue.kv_put(
        b"cron/state/d",
        f'{{"last":null,"paused":false,"through":{START_MS},"v":1}}'.encode(),
    )
    assert await scheduler.fire_due() == 0
    assert fire_times(await pending(queue)) == [START_MS + HOUR]
    clock.advance(3600)
    assert await scheduler.fire_due() == 1


async def test_pause_and_resume_are_durable_and_skip_the_paused_firings(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedule = Schedule("p", "@hourly", "q", missed=Missed.BACKFILL)
    scheduler = Scheduler(queue, [schedule])
    await scheduler.fire_due()
    await scheduler.pause("p")
    await scheduler.pause("p")  # idempotent
    clock.advance(3 * 3600 + 30)
    assert await scheduler.fire_due() == 0
    other = Scheduler(queue, [schedule])  # e.g. after a restart: the pause is stored
    assert (await other.status("p")).paused
    assert (await other.status("p")).next_fire is None
    assert await other.fire_due() == 0
    await other.resume("p")
    await other.resume("p")  # idempotent
    assert await scheduler.fire_due() == 0  # 01:00-03:00 fell due while paused: skipped
    status = await scheduler.status("p")
    assert not status.paused
    assert status.next_fire == datetime(2026, 1, 1, 4, tzinfo=ZoneInfo("UTC"))
    clock.advance(3600)
    assert await scheduler.fire_due() == 1
    assert fire_times(await pending(queue)) == [START_MS + 4 * HOUR]
    assert (await scheduler.status("p")).last_fire == datetime(
        2026, 1, 1, 4, tzinfo=ZoneInfo("UTC")
    )


async def test_pausing_a_never_run_schedule(queue: taquba.Queue, clock: MockClock) -> None:
    scheduler = Scheduler(queue, [Schedule("p", "@hourly", "q")])
    assert (await scheduler.status("p")).last_fire is None
    await scheduler.pause("p")
    clock.advance(7200)
    assert await scheduler.fire_due() == 0
    await scheduler.resume("p")
    clock.advance(3600)
    assert await scheduler.fire_due() == 1


async def test_inspection(queue: taquba.Queue, clock: MockClock) -> None:
    schedule = Schedule("i", "0 9 * * 1-5", "q", tz="Asia/Kolkata")
    scheduler = Scheduler(queue, [schedule])
    assert list(scheduler.schedules) == ["i"]
    assert scheduler.queue is queue
    times = scheduler.next_fire_times("i", 3)  # 2026-01-01 is a Thursday
    assert [t.isoformat() for t in times] == [
        "2026-01-01T09:00:00+05:30",
        "2026-01-02T09:00:00+05:30",
        "2026-01-05T09:00:00+05:30",
    ]
    status = await scheduler.status("i")
    assert status.next_fire == times[0]
    with pytest.raises(UnknownSchedule):
        scheduler.next_fire_times("nope")
    for method in (scheduler.pause, scheduler.resume, scheduler.status):
        with pytest.raises(UnknownSchedule):
            await method("nope")


async def test_corrupt_state_is_reported(queue: taquba.Queue) -> None:
    await queue.kv_put(b"cron/state/c", b"garbage")
    scheduler = Scheduler(queue, [Schedule("c", "@hourly", "q")])
    with pytest.raises(CorruptState):
        await scheduler.fire_due()
    with pytest.raises(CorruptState):
        await scheduler.status("c")


async def test_serve_keeps_other_schedules_going_when_one_fails(
    queue: taquba.Queue, clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(fire: datetime) -> bytes:
        raise ValueError("boom")

    schedules = [
        Schedule("broken", "* * * * *", "q", payload_factory=broken),
        Schedule("fine", "* * * * *", "q"),
    ]
    scheduler = Scheduler(queue, schedules, poll_interval=0.002)
    with caplog.at_level(logging.WARNING, logger="taquba_cron"):
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
            clock.advance(60)
            await wait_for_pending(queue, 1)
            scheduler.shutdown()
    assert fire_times(await pending(queue), "fine") == [START_MS + MINUTE]
    assert any("'broken' failed" in record.getMessage() for record in caplog.records)


async def test_a_year_of_daily_firings_across_dst_with_a_mock_clock(
    queue: taquba.Queue, clock: MockClock
) -> None:
    zone = ZoneInfo("America/New_York")
    schedule = Schedule("daily", "30 2 * * *", "q", tz="America/New_York")
    scheduler = Scheduler(queue, [schedule])
    await scheduler.fire_due()
    end = int(datetime(2027, 1, 1, tzinfo=zone).timestamp() * 1000)
    while (upcoming := scheduler.next_fire_times("daily")[0]) < datetime.fromtimestamp(
        end / 1000, UTC
    ):
        advance_to(clock, int(upcoming.timestamp() * 1000))
        assert await scheduler.fire_due() == 1
    jobs = await pending(queue)
    local = [datetime.fromtimestamp(f / 1000, zone) for f in fire_times(jobs)]
    assert len(local) == 365  # one per local day of 2026 (Jan 1 02:30 EST is after START)
    assert len({t.date() for t in local}) == 365
    assert local[66].isoformat() == "2026-03-08T03:00:00-04:00"  # the spring-forward gap
    assert {t.strftime("%H:%M") for t in local} == {"02:30", "03:00"}


async def test_a_year_of_hourly_firings_backfilled_weekly(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedule = Schedule(
        "hourly", "0 * * * *", "q", tz="Europe/London", missed=Missed.BACKFILL, lookback=8 * 86400
    )
    scheduler = Scheduler(queue, [schedule], batch_size=500)
    await scheduler.fire_due()
    for _ in range(52):
        clock.advance(7 * 86400)
        await scheduler.fire_due()
    clock.advance(86400)  # 365 days in all
    await scheduler.fire_due()
    got = fire_times(await pending(queue))
    # "0 * * * *" runs by elapsed time: one job per hour of the year, 8760, whatever the DST
    # changes do to the wall clock (March skips 01:00, October repeats it).
    assert len(got) == len(set(got)) == 365 * 24
    assert all(b - a == HOUR for a, b in itertools.pairwise(got))
    assert got == expected_fires(schedule, START_MS, START_MS + 365 * DAY)


@pytest.mark.parametrize("missed", list(Missed))
async def test_a_stall_within_grace_loses_no_firing_under_any_policy(
    queue: taquba.Queue, clock: MockClock, missed: Missed
) -> None:
    # Issue #14: COALESCE used to keep only the latest of three on-time firings.
    scheduler = Scheduler(queue, [Schedule("s", "*/10 * * * * *", "q", missed=missed)])
    await scheduler.fire_due()
    clock.advance(35)
    assert await scheduler.fire_due() == 3
    assert fire_times(await pending(queue)) == [START_MS + i * 10_000 for i in (1, 2, 3)]


async def _finish_all(queue: taquba.Queue) -> list[int]:
    finished: list[int] = []

    async def record(job: JobRecord, lease: LeaseHandle) -> None:
        finished.append(int(job.headers["cron.fire_ms"]))

    await drain(queue, "q", record)
    return finished


async def test_overlap_skip_across_a_restart(store: Store, clock: MockClock) -> None:
    schedule = Schedule("s", "* * * * *", "q", overlap=Overlap.SKIP)
    async with open_test_queue(store, clock=clock) as queue:
        scheduler = Scheduler(queue, [schedule])
        await scheduler.fire_due()
        clock.advance(60)
        assert await scheduler.fire_due() == 1  # 00:01, pending
    async with open_test_queue(store, clock=clock) as queue:  # a restart
        scheduler = Scheduler(queue, [schedule])
        clock.advance(60)
        assert await scheduler.fire_due() == 0  # 00:02 skipped: 00:01 is unfinished
        assert await _finish_all(queue) == [START_MS + MINUTE]
        clock.advance(60)
        assert await scheduler.fire_due() == 1  # 00:03: the previous job is gone (acked)
        job = (await pending(queue))[0]
        assert job.headers["cron.fire_ms"] == str(START_MS + 3 * MINUTE)
        assert job.headers["cron.previous_fire_ms"] == str(START_MS + MINUTE)
        # A claimed job is unfinished too.
        claim = await queue.claim("q")
        assert claim is not None
        clock.advance(60)
        assert await scheduler.fire_due() == 0
        await queue.ack(claim)
        clock.advance(60)
        assert await scheduler.fire_due() == 1


async def test_overlap_buffer_one_across_a_restart(store: Store, clock: MockClock) -> None:
    schedule = Schedule("b", "* * * * *", "q", overlap=Overlap.BUFFER_ONE)
    async with open_test_queue(store, clock=clock) as queue:
        scheduler = Scheduler(queue, [schedule])
        await scheduler.fire_due()
        clock.advance(60)
        assert await scheduler.fire_due() == 1  # 00:01, pending
        clock.advance(60)
        assert await scheduler.fire_due() == 0  # 00:02 is buffered
        status = await scheduler.status("b")
        assert status.buffered_fire == datetime(2026, 1, 1, 0, 2, tzinfo=ZoneInfo("UTC"))
        assert status.next_fire == datetime(2026, 1, 1, 0, 3, tzinfo=ZoneInfo("UTC"))
    async with open_test_queue(store, clock=clock) as queue:  # a restart keeps the buffer
        scheduler = Scheduler(queue, [schedule])
        clock.advance(60)
        assert await scheduler.fire_due() == 0  # 00:03 skipped: one firing already waits
        assert await _finish_all(queue) == [START_MS + MINUTE]
        clock.advance(10)
        assert await scheduler.fire_due() == 1  # the buffered 00:02, though nothing is due
        assert fire_times(await pending(queue)) == [START_MS + 2 * MINUTE]
        assert (await scheduler.status("b")).buffered_fire is None
        clock.advance(50)
        assert await scheduler.fire_due() == 0  # 00:04 is buffered behind 00:02
        assert await _finish_all(queue) == [START_MS + 2 * MINUTE]
        assert await scheduler.fire_due() == 1
        assert fire_times(await pending(queue)) == [START_MS + 4 * MINUTE]


async def test_serve_releases_a_buffered_firing_once_the_job_finishes(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedule = Schedule("b", "@hourly", "q", overlap=Overlap.BUFFER_ONE)
    scheduler = Scheduler(queue, [schedule], poll_interval=0.002)
    await scheduler.fire_due()
    clock.advance(3600)
    assert await scheduler.fire_due() == 1
    clock.advance(3600)
    assert await scheduler.fire_due() == 0  # 02:00 buffered behind 01:00
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        # Finish exactly the 01:00 job: the running loop may release 02:00 at once, and a
        # drain would then finish that one too.
        claim = await queue.claim("q")
        assert claim is not None
        assert fire_times([claim.job]) == [START_MS + HOUR]
        await queue.ack(claim)
        await wait_for_pending(queue, 1)  # the loop notices within its poll interval
        scheduler.shutdown()
    assert fire_times(await pending(queue)) == [START_MS + 2 * HOUR]


# ---------------------------------------------------------------------- serve and shutdown


class Held:
    """A real queue whose ``enqueue_batch`` calls wait, before reaching it, until released.

    Not a mock: every call reaches the real queue, once ``release`` is set. It lets a test
    shut a scheduler down while a firing is in flight.
    """

    def __init__(self, queue: taquba.Queue) -> None:
        self._queue = queue
        self.entered = trio.Event()
        self.release = trio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._queue, name)

    async def enqueue_batch(
        self, requests: Sequence[taquba.EnqueueRequest], **options: object
    ) -> list[taquba.EnqueueResult]:
        self.entered.set()
        await self.release.wait()
        return await self._queue.enqueue_batch(requests, **options)  # type: ignore[arg-type]


async def test_shutdown_stops_serve_and_nothing_fires_after(
    queue: taquba.Queue, clock: MockClock
) -> None:
    scheduler = Scheduler(queue, [Schedule("m", "* * * * *", "q")], poll_interval=0.002)
    assert not scheduler.shutting_down
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        clock.advance(60)
        await wait_for_pending(queue, 1)
        scheduler.shutdown()
        scheduler.shutdown()  # idempotent
        assert scheduler.shutting_down
    # serve returned (the nursery closed without a cancel); the loop no longer fires.
    clock.advance(600)
    assert fire_times(await pending(queue)) == [START_MS + MINUTE]
    with trio.fail_after(1):
        await scheduler.serve()  # sticky: served again, it returns at once


async def test_shutdown_before_serve_returns_at_once_without_firing(
    queue: taquba.Queue, clock: MockClock
) -> None:
    scheduler = Scheduler(queue, [Schedule("h", "@hourly", "q")])
    scheduler.shutdown()
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
    page = await queue.kv_scan(STATE_KEY_PREFIX)
    assert page.entries == []  # not even the schedule's state was created


async def test_one_serve_at_a_time(queue: taquba.Queue, clock: MockClock) -> None:
    scheduler = Scheduler(queue, [Schedule("h", "@hourly", "q")])
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        with pytest.raises(taquba.UsageError, match="already serving"):
            await scheduler.serve()
        scheduler.shutdown()
    other = Scheduler(queue, [Schedule("h", "@hourly", "q")])
    async with trio.open_nursery() as nursery:  # after it returned, another may serve
        await nursery.start(other.serve)
        other.shutdown()


async def test_shutdown_lets_the_firing_in_flight_commit(
    queue: taquba.Queue, clock: MockClock
) -> None:
    held = Held(queue)
    scheduler = Scheduler(held, [Schedule("h", "@hourly", "q")], poll_interval=0.002)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        clock.advance(3600)
        await held.entered.wait()  # the firing of 01:00 is in flight
        scheduler.shutdown()
        await trio.testing.wait_all_tasks_blocked()  # the loop has seen the shutdown
        held.release.set()
    assert fire_times(await pending(queue)) == [START_MS + HOUR]
    assert (await scheduler.status("h")).last_fire == datetime(2026, 1, 1, 1, tzinfo=UTC)


async def test_shutdown_stops_a_backfill_between_batches(
    queue: taquba.Queue, clock: MockClock
) -> None:
    schedule = Schedule("b", "@hourly", "q", missed=Missed.BACKFILL)
    await Scheduler(queue, [schedule]).fire_due()  # the schedule starts at START
    clock.advance(10 * 3600 + 120)  # ten firings missed
    held = Held(queue)
    scheduler = Scheduler(held, [schedule], batch_size=3)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(scheduler.serve)
        await held.entered.wait()  # the first batch is in flight
        scheduler.shutdown()
        held.release.set()
    assert fire_times(await pending(queue)) == [START_MS + h * HOUR for h in (1, 2, 3)]
    assert await Scheduler(queue, [schedule]).fire_due() == 7  # the watermark resumes it
    assert fire_times(await pending(queue)) == [START_MS + h * HOUR for h in range(1, 11)]


async def test_shutdown_grace_cancels_a_stuck_firing_and_loses_nothing(
    queue: taquba.Queue, clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    held = Held(queue)  # never released: the firing is stuck before its transaction
    schedule = Schedule("h", "@hourly", "q")
    scheduler = Scheduler(held, [schedule], poll_interval=0.002, shutdown_grace=0.05)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="taquba_cron"):
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
            clock.advance(3600)
            await held.entered.wait()
            before = trio.current_time()
            scheduler.shutdown()
        waited = trio.current_time() - before
    assert 0.05 <= waited < 1
    assert any("shutdown_grace expired" in r.getMessage() for r in caplog.records)
    assert await pending(queue) == []
    assert (await scheduler.status("h")).last_fire is None  # the watermark did not move
    assert await Scheduler(queue, [schedule]).fire_due() == 1  # the firing is still due


async def test_cancellation_is_the_hard_stop(queue: taquba.Queue, clock: MockClock) -> None:
    held = Held(queue)
    scheduler = Scheduler(held, [Schedule("h", "@hourly", "q")], poll_interval=0.002)  # type: ignore[arg-type]
    with trio.move_on_after(5) as outer:
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
            clock.advance(3600)
            await held.entered.wait()
            nursery.cancel_scope.cancel()
    assert not outer.cancelled_caught
    assert await pending(queue) == []
    assert await Scheduler(queue, [Schedule("h", "@hourly", "q")]).fire_due() == 1


async def test_a_closed_queue_ends_serve_with_queue_closed_itself(
    store: Store, clock: MockClock
) -> None:
    caught: list[BaseException] = []

    async def serve(
        scheduler: Scheduler, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await scheduler.serve(task_status=task_status)
        except BaseException as exc:
            caught.append(exc)

    async with trio.open_nursery() as nursery:
        async with open_test_queue(store, clock=clock) as queue:
            scheduler = Scheduler(queue, [Schedule("m", "* * * * *", "q")], poll_interval=0.002)
            await nursery.start(serve, scheduler)
        clock.advance(60)  # due now, on a closed queue
    assert len(caught) == 1
    assert isinstance(caught[0], taquba.QueueClosed)
