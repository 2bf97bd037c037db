"""`Scheduler` over any `taquba.QueueLike` (`taquba.testing.ForwardingQueue`: the protocol's
members and nothing else, each forwarding to a real `taquba.Queue`)."""

from __future__ import annotations

import trio

import taquba
from taquba import JobStatus, MockClock
from taquba.testing import ForwardingQueue
from taquba_cron import Schedule, Scheduler

HANG = 10  # seconds: bounds that only catch hangs


async def test_a_scheduler_over_the_protocol_fires_pauses_and_serves(
    queue: taquba.Queue, clock: MockClock
) -> None:
    forwarding = ForwardingQueue(queue)
    scheduler = Scheduler(forwarding, [Schedule("h", "@hourly", "q", payload=b"tick")])
    assert scheduler.queue is forwarding
    assert await scheduler.fire_due() == 0  # first sight: the state starts now
    clock.advance(3600)
    assert await scheduler.fire_due() == 1
    await scheduler.pause("h")
    clock.advance(3600)
    assert await scheduler.fire_due() == 0
    await scheduler.resume("h")
    status = await scheduler.status("h")
    assert not status.paused
    clock.advance(3600)
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
            while (await queue.stats("q")).pending < 2:
                await queue.wait_for_jobs_on("q")
            scheduler.shutdown()
    page = await queue.list_jobs("q", JobStatus.PENDING)
    assert [job.payload for job in page.jobs] == [b"tick", b"tick"]
    for member in ("kv_get", "kv_compare_and_set", "enqueue_batch", "clock"):
        assert forwarding.calls[member] >= 1, member
