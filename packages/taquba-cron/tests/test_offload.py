"""Schedules on a queue that offloads payloads (`taquba.QueueConfig.payload_offload_threshold`).

A schedule's payload (fixed, or built by its factory) is each fired job's payload: above the
threshold it lives in an object of its own. Handlers must read the whole payload, and a firing
refused by its dedup key (a rolled-back watermark) must not leave an object behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import taquba
from taquba import JobRecord, LeaseHandle, MockClock, QueueConfig, Store
from taquba.testing import drain, open_test_queue
from taquba_cron import Missed, Schedule, Scheduler

pytestmark = pytest.mark.skipif(
    "payload_offload_threshold" not in {f.name for f in dataclasses.fields(QueueConfig)},
    reason="payload offload needs taquba >= 0.10",
)

THRESHOLD = 64
BIG = b"report:" + b"r" * 5000
START_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)  # the clock fixture's start


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return Store.memory() if request.param == "memory" else Store.from_url(tmp_path / "store")


@pytest.fixture
async def queue(store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    config = QueueConfig(payload_offload_threshold=THRESHOLD)
    async with open_test_queue(store, clock=clock, config=config) as queue:
        yield queue


async def payload_objects(queue: taquba.Queue) -> list[str]:
    """The offloaded payload objects in the queue's store (``db/<name>/payloads/<ref>``)."""
    return [name for name in await queue.store.list_blobs("db") if "/payloads/" in name]


async def handled(queue: taquba.Queue) -> list[JobRecord]:
    jobs: list[JobRecord] = []

    async def handler(job: JobRecord, lease: LeaseHandle) -> None:
        jobs.append(job)

    await drain(queue, "q", handler)
    return jobs


async def test_a_large_fixed_payload_reaches_every_firing(
    queue: taquba.Queue, clock: MockClock
) -> None:
    scheduler = Scheduler(queue, [Schedule("h", "@hourly", "q", payload=BIG)])
    await scheduler.fire_due()
    clock.advance(3600)
    assert await scheduler.fire_due() == 1
    clock.advance(3600)
    assert await scheduler.fire_due() == 1
    page = await queue.list_jobs("q", taquba.JobStatus.PENDING)
    assert [job.payload_ref is not None for job in page.jobs] == [True, True]
    assert [job.payload for job in await handled(queue)] == [BIG, BIG]
    assert await payload_objects(queue) == []


async def test_a_large_factory_payload_reaches_its_firing(
    queue: taquba.Queue, clock: MockClock
) -> None:
    def factory(fire: datetime) -> bytes:
        return fire.isoformat().encode() * 200

    scheduler = Scheduler(queue, [Schedule("h", "@hourly", "q", payload_factory=factory)])
    await scheduler.fire_due()
    clock.advance(3600)
    assert await scheduler.fire_due() == 1
    [job] = await handled(queue)
    assert job.payload == b"2026-01-01T01:00:00+00:00" * 200


async def test_a_firing_refused_by_its_dedup_key_leaves_no_object(
    queue: taquba.Queue, clock: MockClock
) -> None:
    scheduler = Scheduler(
        queue, [Schedule("d", "@hourly", "q", payload=BIG, missed=Missed.BACKFILL)]
    )
    await scheduler.fire_due()
    clock.advance(3600)
    assert await scheduler.fire_due() == 1
    assert len(await payload_objects(queue)) == 1
    # Roll the watermark back: the next pass enqueues the same fire time again, and the
    # pending job's dedup key refuses it.
    await queue.kv_put(
        b"cron/state/d",
        f'{{"last":null,"paused":false,"through":{START_MS},"v":1}}'.encode(),
    )
    assert await scheduler.fire_due() == 0
    assert len(await payload_objects(queue)) == 1  # the refused enqueue's object is gone
    assert [job.payload for job in await handled(queue)] == [BIG]
    assert await payload_objects(queue) == []
