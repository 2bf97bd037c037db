"""taquba-cron by example: live schedules with a worker, then a simulated week with a mock clock.

Run it with ``uv run python examples/cron_example.py`` (about five seconds). Part one runs a
seconds-field schedule with a typed payload on the system clock, and a `taquba.Worker` that
decodes and prints each job; both stop gracefully with ``shutdown()``. Part two drives a
daily Europe/London schedule with a `taquba.MockClock` through a three-day outage and the
October DST change, with the backfill policy, in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import trio

import taquba
from taquba.testing import open_test_queue
from taquba_cron import Missed, Schedule, Scheduler


@dataclass(frozen=True)
class Beat:
    """The payload of each heartbeat job (any type `taquba.Codec` supports will do)."""

    label: str
    at: datetime


BEATS = taquba.Codec(Beat)


async def live(seconds: float = 5.0, *, stop_after: int | None = None) -> list[str]:
    """Run a 2-second heartbeat schedule and a worker for ``seconds``; return what ran.

    With ``stop_after``, stop as soon as that many heartbeats ran (the tests use it).
    """
    ran: list[str] = []
    enough = trio.Event()

    async def handle(job: taquba.JobRecord, lease: taquba.LeaseHandle) -> None:
        beat = BEATS.decode(job.payload)
        ran.append(job.headers["cron.fire_time"])
        if stop_after is not None and len(ran) >= stop_after:
            enough.set()
        print(f"  worker: {job.headers['cron.schedule']} fired: {beat.label} at {beat.at:%T}")

    heartbeat = Schedule(
        "heartbeat",
        "*/2 * * * * *",  # six fields: the first one is seconds
        "pings",
        payload_factory=lambda fire: Beat("beat", fire),
        payload_type=Beat,
    )
    nightly = Schedule("nightly", "30 2 * * *", "reports", tz="America/New_York")
    async with taquba.open_queue(taquba.Store.memory()) as queue:
        scheduler = Scheduler(queue, [heartbeat, nightly], poll_interval=0.5)
        worker = taquba.Worker(queue, "pings", handle)
        print(
            "next nightly runs:", [t.isoformat() for t in scheduler.next_fire_times("nightly", 3)]
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
            await nursery.start(worker.serve)
            with trio.move_on_after(seconds):
                await enough.wait()
            scheduler.shutdown()  # graceful: fires nothing new; both serve calls return
            worker.shutdown()
    return ran


async def simulated_week() -> list[str]:
    """Drive a daily London schedule through an outage and a DST change with a mock clock."""
    clock = taquba.MockClock(int(datetime(2026, 10, 20, 12, tzinfo=UTC).timestamp() * 1000))
    digest = Schedule(
        "digest",
        "30 1 * * *",  # 01:30 London time: repeated on 25 October 2026, when clocks go back
        "digests",
        tz="Europe/London",
        missed=Missed.BACKFILL,
        lookback=7 * 86400,
    )
    async with open_test_queue(clock=clock) as queue:
        scheduler = Scheduler(queue, [digest])
        await scheduler.fire_due()  # the schedule starts now
        clock.advance(3 * 86400)  # the scheduler is down for three days...
        print(f"  after the outage: {await scheduler.fire_due()} jobs backfilled")
        for _ in range(4):  # ...then runs normally, firing at each due time
            upcoming = scheduler.next_fire_times("digest")[0]
            clock.advance(upcoming.timestamp() - clock.now_ms() / 1000)
            await scheduler.fire_due()
        await scheduler.pause("digest")
        page = await queue.list_jobs("digests", taquba.JobStatus.PENDING)
    fired = sorted(job.headers["cron.fire_time"] for job in page.jobs)
    for moment in fired:
        print("  digest job for", moment)
    return fired


async def main() -> None:
    """Run both parts."""
    print("Part 1: live schedules on the system clock")
    await live()
    print("Part 2: a simulated week (outage, backfill, DST) on a mock clock")
    await simulated_week()


if __name__ == "__main__":
    trio.run(main)
