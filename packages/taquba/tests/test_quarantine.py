"""Poison records: an undecodable record is quarantined and the queue keeps going.

Each test corrupts the stored bytes of a real job (through the queue's database handle), so
the counters did count it, then shows that the operation that meets it moves it aside, logs it
once, takes it out of its counter, and serves every good job.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
import trio

import taquba
from taquba import JobStatus, MockClock, QueueConfig, QueueStats, Store
from taquba import _keys as keys  # pyright: ignore[reportPrivateUsage]
from taquba import _views as views  # pyright: ignore[reportPrivateUsage]

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
GARBAGE = b"\xc1 not msgpack"
HANG = 20


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
async def queue(memory_store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    config = QueueConfig(max_attempts=3, lease_duration=10, keep_done=1, dead_retention=1)
    async with taquba.open_queue(memory_store, "qt", config=config, clock=clock, **FAST) as q:
        yield q


async def corrupt(queue: taquba.Queue, key: bytes) -> None:
    db = queue._database  # pyright: ignore[reportPrivateUsage]
    assert await db.get(key) is not None, "corrupt an existing record"
    await db.put(key, GARBAGE)


def quarantine_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]


async def enqueue(queue: taquba.Queue, count: int, **kwargs: object) -> list[str]:
    return [
        (await queue.enqueue("q", b"%d" % i, job_id=f"j{i}", **kwargs)).id  # type: ignore[arg-type]
        for i in range(count)
    ]


async def test_a_bad_pending_record_does_not_block_claims(
    queue: taquba.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    await enqueue(queue, 5)
    bad = keys.pending_key("q", taquba.PRIORITY_NORMAL, "j0")  # the head of the queue
    await corrupt(queue, bad)
    caplog.set_level(logging.WARNING, "taquba")
    claims = await queue.claim_batch("q", 10)
    assert [c.id for c in claims] == ["j1", "j2", "j3", "j4"]
    assert await queue.stats("q") == QueueStats("q", claimed=4, quarantined=1)
    [record] = await queue.quarantined("q")
    assert (record.queue_name, record.key, record.raw) == ("q", bad, GARBAGE)
    assert "undecodable" in record.reason
    warnings = quarantine_warnings(caplog)
    assert len(warnings) == 1
    assert "'q'" in warnings[0]
    assert repr(bad) in warnings[0]
    assert await queue.claim("q") is None
    assert len(quarantine_warnings(caplog)) == 1  # logged once


async def test_a_claim_of_only_bad_records_goes_on_to_the_good_ones(queue: taquba.Queue) -> None:
    await enqueue(queue, 4)
    for i in range(3):
        await corrupt(queue, keys.pending_key("q", taquba.PRIORITY_NORMAL, f"j{i}"))
    claim = await queue.claim("q")
    assert claim is not None
    assert claim.id == "j3"
    assert (await queue.stats("q")).quarantined == 3


@pytest.mark.parametrize("concurrency", [1, 3], ids=["one-at-a-time", "concurrent"])
async def test_workers_process_every_good_job_past_a_bad_one(
    queue: taquba.Queue, concurrency: int
) -> None:
    await enqueue(queue, 6)
    await corrupt(queue, keys.pending_key("q", taquba.PRIORITY_NORMAL, "j2"))
    seen: list[str] = []

    async def handler(job: taquba.JobRecord, lease: taquba.LeaseHandle) -> None:
        seen.append(job.id)
        if len(seen) == 5:
            worker.shutdown()

    worker = taquba.Worker(queue, "q", handler, concurrency=concurrency, poll_interval=0.05)
    with trio.fail_after(HANG):
        await worker.serve()
    assert sorted(seen) == ["j0", "j1", "j3", "j4", "j5"]
    assert await queue.stats("q") == QueueStats("q", done=5, quarantined=1)


async def test_a_bad_scheduled_record_does_not_stop_promotion(
    queue: taquba.Queue, clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    await enqueue(queue, 3, delay=5)
    run_at = clock.now_ms() + 5000
    bad = keys.scheduled_key(run_at, "q", "j1")
    await corrupt(queue, bad)
    clock.advance(10)
    caplog.set_level(logging.WARNING, "taquba")
    assert await queue.promote_scheduled_now() == 2
    assert await queue.stats("q") == QueueStats("q", pending=2, quarantined=1)
    assert [r.key for r in await queue.quarantined("q")] == [bad]
    assert await queue.promote_scheduled_now() == 0
    assert len(quarantine_warnings(caplog)) == 1


async def test_the_scheduler_task_keeps_promoting(memory_store: Store, clock: MockClock) -> None:
    fast = {**FAST, "scheduler_interval": 0.01}
    async with taquba.open_queue(memory_store, "qt", clock=clock, **fast) as queue:
        await enqueue(queue, 3, delay=5)
        await corrupt(queue, keys.scheduled_key(clock.now_ms() + 5000, "q", "j0"))
        clock.advance(10)
        with trio.fail_after(HANG):
            while (await queue.stats("q")).pending < 2:  # noqa: ASYNC110 - polls state
                await trio.sleep(0.01)
        assert queue.failure is None
        assert await queue.stats("q") == QueueStats("q", pending=2, quarantined=1)


async def test_a_bad_claimed_record_is_quarantined_by_the_reaper(
    queue: taquba.Queue, clock: MockClock
) -> None:
    await enqueue(queue, 2)
    claims = await queue.claim_batch("q", 2)
    await corrupt(queue, keys.claimed_key("q", "j0"))
    clock.advance(60)
    assert await queue.reap_now() == 1
    assert await queue.stats("q") == QueueStats("q", pending=1, quarantined=1)
    assert [r.key for r in await queue.quarantined("q")] == [keys.claimed_key("q", "j0")]
    assert len(claims) == 2


async def test_a_bad_claimed_record_is_quarantined_at_open(
    memory_store: Store, clock: MockClock
) -> None:
    async with taquba.open_queue(memory_store, "qt", clock=clock, **FAST) as queue:
        await enqueue(queue, 3)
        assert len(await queue.claim_batch("q", 3)) == 3
        await corrupt(queue, keys.claimed_key("q", "j1"))
    # Reopening recovers the claims the "dead" process left: the bad one goes aside.
    async with taquba.open_queue(memory_store, "qt", clock=clock, **FAST) as queue:
        assert await queue.stats("q") == QueueStats("q", pending=2, quarantined=1)
        assert [c.id for c in await queue.claim_batch("q", 5)] == ["j0", "j2"]


@pytest.mark.parametrize("status", [JobStatus.DONE, JobStatus.DEAD])
async def test_sweeps_quarantine_bad_records_and_sweep_the_rest(
    queue: taquba.Queue, clock: MockClock, status: JobStatus
) -> None:
    await enqueue(queue, 3)
    for claim in await queue.claim_batch("q", 3):
        if status is JobStatus.DONE:
            await queue.ack(claim)
        else:
            await queue.dead_letter(claim, "no")
    [bad_record, *_] = (await queue.list_jobs("q", status)).jobs
    located = await views.locate(queue._database, bad_record.id)  # pyright: ignore[reportPrivateUsage]
    assert located is not None
    await corrupt(queue, located[0])
    clock.advance(60)
    assert await queue.sweep_now() == 2
    stats = await queue.stats("q")
    assert stats.quarantined == 1
    assert stats.dead == 0
    assert [r.key for r in await queue.quarantined("q")] == [located[0]]
    assert await queue.sweep_now() == 0


async def test_listings_leave_out_bad_records(queue: taquba.Queue) -> None:
    await enqueue(queue, 3)
    await corrupt(queue, keys.pending_key("q", taquba.PRIORITY_NORMAL, "j1"))
    page = await queue.list_jobs("q", JobStatus.PENDING)
    assert [j.id for j in page.jobs] == ["j0", "j2"]


async def test_a_bad_stats_delta_is_quarantined_by_the_fold(queue: taquba.Queue) -> None:
    await enqueue(queue, 2)
    db = queue._database  # pyright: ignore[reportPrivateUsage]
    bad = keys.stats_delta_key("q", 1)  # sorts before every real delta
    await db.put(bad, GARBAGE)
    assert (await queue.stats("q")).pending == 2  # skipped, not fatal
    await queue.fold_stats_now()
    assert await queue.stats("q") == QueueStats("q", pending=2, quarantined=1)
    assert [r.key for r in await queue.quarantined("q")] == [bad]
    assert await db.scan(keys.stats_delta_prefix("q")) == []


async def test_quarantined_pages(queue: taquba.Queue) -> None:
    await enqueue(queue, 3)
    for i in range(3):
        await corrupt(queue, keys.pending_key("q", taquba.PRIORITY_NORMAL, f"j{i}"))
    assert await queue.claim("q") is None
    first = await queue.quarantined("q", limit=2)
    rest = await queue.quarantined("q", after=first[-1].key)
    assert len(first) == 2
    assert len(rest) == 1
    assert await queue.quarantined("q", limit=0) == []
    with pytest.raises(taquba.UsageError):
        await queue.quarantined("q", limit=-1)
