"""Workers and background tasks under storage faults (`taquba.testing.inject_faults`).

Transient faults are retried with backoff and never end a loop; a permanent one ends a
`Worker` (one job at a time or several) with that error, raised as itself. Time bounds only
guard against hangs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
import trio

import taquba
from taquba import MockClock, QueueConfig, QueueStats, Store
from taquba._health import RETRY_CAP, retry_delay  # pyright: ignore[reportPrivateUsage]
from taquba.testing import Fault, inject_faults

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

FAST = {"flush_interval": 0.005, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}
CONFIG = QueueConfig(max_attempts=5, lease_duration=10)
HANG = 30
JOBS = 6


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
async def queue(memory_store: Store, clock: MockClock) -> AsyncIterator[taquba.Queue]:
    async with taquba.open_queue(memory_store, "rs", config=CONFIG, clock=clock, **FAST) as q:
        yield q


async def serve(
    queue: taquba.Queue,
    concurrency: int,
    all_seen: trio.Event,
    seen: list[str],
    stop_when_all_seen: bool = True,
) -> None:
    """Serve ``q`` with a `Worker`, recording each delivery; shut it down once all were seen."""

    async def handler(job: taquba.JobRecord, lease: taquba.LeaseHandle) -> None:
        seen.append(job.id)
        if stop_when_all_seen and len(set(seen)) == JOBS:
            all_seen.set()
            worker.shutdown()

    worker = taquba.Worker(queue, "q", handler, concurrency=concurrency, poll_interval=0.05)
    await worker.serve()


CONCURRENCY = pytest.mark.parametrize("concurrency", [1, 3], ids=["one-at-a-time", "concurrent"])


async def fill(queue: taquba.Queue) -> None:
    for i in range(JOBS):
        await queue.enqueue("q", b"x", job_id=f"j{i}")


@CONCURRENCY
@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(lambda f: f.on_read(Fault.unavailable(), times=4), id="read"),
        pytest.param(lambda f: f.on_write(Fault.unavailable(), times=3, durable=False), id="write"),
    ],
)
async def test_transient_claim_errors_are_retried(
    queue: taquba.Queue, concurrency: int, inject: object, caplog: pytest.LogCaptureFixture
) -> None:
    await fill(queue)
    seen: list[str] = []
    caplog.set_level(logging.WARNING, "taquba")
    with inject_faults() as faults, trio.fail_after(HANG):
        inject(faults)  # type: ignore[operator]
        await serve(queue, concurrency, trio.Event(), seen)
    assert sorted(seen) == [f"j{i}" for i in range(JOBS)]
    assert faults.armed == 0
    health = queue.health()
    assert health.healthy
    assert health.retried == len(faults.injected)
    assert isinstance(health.last_error, taquba.StorageUnavailable)
    assert await queue.stats("q") == QueueStats("q", done=JOBS)
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert 1 <= len(retries) <= len(faults.injected)


async def test_health_shows_a_failing_loop_while_it_retries(queue: taquba.Queue) -> None:
    await fill(queue)
    all_seen = trio.Event()
    seen: list[str] = []
    with inject_faults() as faults:
        faults.on_read(Fault.unavailable(), times=None)  # until cleared
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, queue, 1, all_seen, seen)
            with trio.fail_after(HANG):
                while queue.health().consecutive_failures < 2:  # noqa: ASYNC110 - polls state
                    await trio.sleep(0.01)
            health = queue.health()
            assert not health.healthy
            assert health.failing == ("worker 'q'",)
            assert health.stopped is None
            faults.clear()
            with trio.fail_after(HANG):
                await all_seen.wait()
    assert queue.health().healthy
    assert len(set(seen)) == JOBS


@CONCURRENCY
async def test_a_permanent_claim_error_ends_the_worker(
    queue: taquba.Queue, concurrency: int
) -> None:
    await fill(queue)
    with inject_faults() as faults, trio.fail_after(HANG):
        faults.on_read(Fault.permanent())
        with pytest.raises(taquba.StorageError) as caught:
            await serve(queue, concurrency, trio.Event(), [])
    assert type(caught.value) is taquba.StorageError
    assert not caught.value.transient
    assert queue.health().failing == ()  # the loop is gone, not failing


@CONCURRENCY
@pytest.mark.parametrize("kind", ["unavailable", "unknown"])
async def test_a_transient_settlement_error_does_not_end_the_worker(
    queue: taquba.Queue, clock: MockClock, concurrency: int, kind: str
) -> None:
    await fill(queue)
    seen: list[str] = []
    with inject_faults() as faults, trio.fail_after(HANG):
        faults.on_write(Fault(kind), times=1, durable=True)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            # The loop must outlive the first delivery of every job. Wait until each one is
            # settled or its settlement failed (one failed group commit may fail several acks;
            # with "unknown" they landed all the same): a delivery still in flight when the
            # clock moves would be reaped and delivered again.
            nursery.start_soon(serve, queue, concurrency, trio.Event(), seen, False)

            async def all_settled() -> bool:
                failed = queue.health().retried
                lost = failed if kind == "unavailable" else 0
                return failed > 0 and (await queue.stats("q")).done + lost >= JOBS

            while not await all_settled():  # noqa: ASYNC110 - polls state
                await trio.sleep(0.01)
            # The failed settlement's lease expires and the job is delivered again.
            clock.advance(60)
            await queue.reap_now()
            while (await queue.stats("q")).done < JOBS:  # noqa: ASYNC110 - polls state
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert (await queue.stats("q")).done == JOBS
    if kind == "unknown":
        assert len(seen) == JOBS  # the ack landed: nothing to deliver again
    else:
        assert len(seen) > JOBS  # the jobs of the failed settlement twice
    assert sorted(set(seen)) == [f"j{i}" for i in range(JOBS)]


async def test_background_tasks_survive_faults_and_bad_values(
    memory_store: Store, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = taquba.Queue.promote_scheduled_now
    calls = 0

    async def flaky(self: taquba.Queue) -> int:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ValueError("a bad value")
        return await original(self)

    monkeypatch.setattr(taquba.Queue, "promote_scheduled_now", flaky)
    fast = {**FAST, "scheduler_interval": 0.01}
    async with taquba.open_queue(memory_store, "rs", clock=clock, **fast) as queue:
        await queue.enqueue("q", b"x", delay=5)
        clock.advance(10)
        with inject_faults() as faults, trio.fail_after(HANG):
            faults.on_read(Fault.unavailable(), times=2)
            faults.on_write(Fault.permanent(), times=1, durable=False)
            # Background ticks meet every fault (this test reads nothing meanwhile).
            while faults.armed or queue.health().retried < 2 + 3:  # noqa: ASYNC110 - polls state
                await trio.sleep(0.01)
        with trio.fail_after(HANG):
            while (await queue.stats("q")).pending < 1:  # noqa: ASYNC110 - polls state
                await trio.sleep(0.01)
        assert queue.failure is None
        assert queue.health().stopped is None


def test_retry_delay_grows_is_capped_and_jittered() -> None:
    assert retry_delay(1, 0.0) == pytest.approx(0.05)
    assert retry_delay(1, 1.0) == pytest.approx(0.1)
    assert retry_delay(3, 1.0) == pytest.approx(0.4)
    assert retry_delay(10_000, 1.0) == RETRY_CAP
    assert retry_delay(10_000, 0.0) == RETRY_CAP / 2
    delays = [retry_delay(n, 0.5) for n in range(1, 20)]
    assert delays == sorted(delays)
