"""Long work: the lease is kept alive while a job runs, and a time limit bounds an attempt.

These tests run on trio's virtual clock (pytest-trio's ``mock_clock`` with a small autojump
threshold), and the queue reads the same virtual time through `TrioTime`, so a five-minute
job takes five virtual minutes: the lease expiries the queue computes, the reaper's ticks and
the runner's renewals all move together. SlateDB works on threads, so the clock may jump
while a storage call is in flight (design §6); it only ever jumps to the next trio deadline,
which keeps renewals ahead of the expiries they prevent. Nothing here asserts timing.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

import taquba
from taquba import JobStatus, QueueConfig
from taquba.testing import open_test_queue
from taquba_jobs import Job, JobContext, JobFailed, JobRunner, job
from taquba_jobs._records import decode_result

START_MS = 1_800_000_000_000
HANG_GUARD = 3600  # virtual seconds: only turns a handle that never resolves into a failure


class TrioTime:
    """A `taquba.Clock` that reads trio's (virtual) clock: the queue's time follows trio's."""

    def __init__(self, trio_clock: trio.testing.MockClock) -> None:
        self._trio_clock = trio_clock

    def now_ms(self) -> int:
        return START_MS + int(self._trio_clock.current_time() * 1000)


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    """pytest-trio runs a test on this clock when the test itself asks for ``mock_clock``.

    The autojump threshold is small but positive: the clock jumps only once every task has
    idled a little while, so a storage call in flight on a thread is rarely jumped over.
    """
    return trio.testing.MockClock(autojump_threshold=0.005)


@pytest.fixture
def virtual(mock_clock: trio.testing.MockClock) -> TrioTime:
    return TrioTime(mock_clock)


def open_queue(clock: TrioTime, config: QueueConfig | None = None) -> Any:
    """A test queue on the virtual clock, with the default config (30 s lease, 3 attempts)."""
    return open_test_queue(clock=clock, config=config, reaper_interval=1.0, scheduler_interval=1.0)


async def test_a_five_minute_job_completes_once_under_the_default_lease(
    mock_clock: trio.testing.MockClock, virtual: TrioTime, serving: Any
) -> None:
    """An LLM call of five minutes just works with the defaults: no redelivery, no reap."""
    attempts: list[int] = []

    @job(name="tests.llm")
    async def llm(ctx: JobContext, prompt: str) -> str:
        attempts.append(ctx.attempt)
        await trio.sleep(300)  # ten times the 30 s lease
        return prompt.upper()

    async with open_queue(virtual) as queue:
        assert queue.config("jobs").lease_duration == 30
        runner = JobRunner(queue, [llm], poll_interval=1.0)
        async with serving(runner):
            handle = await runner.submit(llm, "summarise this")
            with trio.fail_after(HANG_GUARD):
                assert await handle.result() == "SUMMARISE THIS"
        stored = await queue.store.get_blob(runner.result_path(handle.job_id))
        assert stored is not None
        assert decode_result(stored).attempts == 1
        assert attempts == [1]
        assert runner.statistics().executions == 1
        stats = await queue.stats("jobs")
        assert (stats.pending, stats.claimed, stats.dead) == (0, 0, 0)


async def test_the_reaper_never_reaps_a_renewed_lease(
    mock_clock: trio.testing.MockClock, virtual: TrioTime, serving: Any
) -> None:
    """While the job runs, reaping finds nothing due and the lease stays ahead of the clock;
    a lease the job extended itself is never shortened by the renewals."""
    seen: list[tuple[int, int]] = []

    @job(name="tests.steady")
    async def steady(ctx: JobContext, value: int) -> int:
        ctx.lease.ensure_at_least(60)  # the job asks for more than one renewal gives
        extended = ctx.lease.expires_at
        assert extended is not None
        for _ in range(10):  # 200 s: well past the extension, kept alive by renewals
            await trio.sleep(20)
            assert await ctx.queue.reap_now() == 0
            expires = ctx.lease.expires_at
            assert expires is not None
            seen.append((virtual.now_ms(), expires))
            if virtual.now_ms() < extended:
                assert expires >= extended  # never shortened
        return value

    async with open_queue(virtual) as queue:
        runner = JobRunner(queue, [steady], poll_interval=1.0)
        async with serving(runner):
            with trio.fail_after(HANG_GUARD):
                assert await (await runner.submit(steady, 5)).result() == 5
    assert len(seen) == 10
    assert all(expires > now for now, expires in seen)


async def test_a_job_over_its_time_limit_fails_the_attempt_and_is_retried(
    mock_clock: trio.testing.MockClock, virtual: TrioTime, serving: Any
) -> None:
    errors: list[str | None] = []

    @job(name="tests.sometimes_slow", time_limit=60)
    async def sometimes_slow(ctx: JobContext, value: int) -> int:
        assert ctx.time_limit == 60
        record = await ctx.queue.get_job(ctx.job_id)
        assert record is not None
        errors.append(record.last_error)
        if ctx.attempt == 1:
            await trio.sleep(3600)  # cancelled at the limit
        return ctx.attempt

    async with open_queue(virtual) as queue:
        runner = JobRunner(queue, [sometimes_slow], poll_interval=1.0)
        async with serving(runner):
            assert await (await runner.submit(sometimes_slow, 1)).result() == 2
    assert errors == [None, "TimeLimitExceeded: timed out after 60 s"]


@pytest.mark.parametrize("interruptible", [True, False])
async def test_a_job_over_its_time_limit_on_every_attempt_fails(
    mock_clock: trio.testing.MockClock, virtual: TrioTime, serving: Any, interruptible: bool
) -> None:
    """The limit cancels the function whether or not it is interruptible; on the last
    attempt the job fails with a clear error, and the waiter resolves."""
    attempts: list[int] = []

    @job(name="tests.hangs", interruptible=interruptible, max_attempts=2)
    async def hangs(ctx: JobContext, value: int) -> int:
        attempts.append(ctx.attempt)
        await trio.sleep_forever()
        return value

    async with open_queue(virtual) as queue:
        runner = JobRunner(queue, [hangs], poll_interval=1.0)
        async with serving(runner):
            handle = await runner.submit(hangs, 1, time_limit=45)
            with pytest.raises(JobFailed) as info:
                await handle.result()
        record = await queue.get_job(handle.job_id)
    assert attempts == [1, 2]
    assert info.value.error_type == "taquba_jobs.TimeLimitExceeded"
    assert info.value.message == "timed out after 45 s"
    assert not info.value.permanent
    assert info.value.attempts == 2
    assert record is not None
    assert record.status is JobStatus.DEAD
    assert record.last_error == "taquba_jobs.TimeLimitExceeded: timed out after 45 s"


async def test_a_submission_overrides_the_jobs_time_limit(
    mock_clock: trio.testing.MockClock, virtual: TrioTime, serving: Any
) -> None:
    limits: list[float | None] = []

    @job(name="tests.bounded", time_limit=10)
    async def bounded(ctx: JobContext, seconds: float) -> float:
        limits.append(ctx.time_limit)
        await trio.sleep(seconds)
        return seconds

    async with open_queue(virtual) as queue:
        runner = JobRunner(queue, [bounded], poll_interval=1.0)
        async with serving(runner):
            assert await (await runner.submit(bounded, 40, time_limit=math.inf)).result() == 40
            assert await (await runner.submit(bounded, 20, time_limit=30)).result() == 20
            assert await (await runner.submit(bounded, 1)).result() == 1
    assert limits == [None, 30, 10]


async def test_time_limits_are_checked(queue: taquba.Queue) -> None:
    async def fine(ctx: JobContext, value: int) -> int:
        return value

    for bad in (0, -1, math.nan, "60", True):
        with pytest.raises(taquba.InvalidArgument, match="time_limit"):
            Job(fine, name="tests.bad", time_limit=bad)  # type: ignore[arg-type]
    assert Job(fine, name="tests.inf", time_limit=math.inf).time_limit is None
    assert Job(fine, name="tests.int", time_limit=5).time_limit == 5.0
    limited = Job(fine, name="tests.limited")
    assert limited.time_limit is None
    runner = JobRunner(queue, [limited])
    with pytest.raises(taquba.InvalidArgument, match="time_limit"):
        await runner.submit(limited, 1, time_limit=-5)
    assert (await queue.stats("jobs")).pending == 0


async def test_an_unreadable_time_limit_fails_the_job_permanently(
    queue: taquba.Queue, serving: Any
) -> None:
    @job(name="tests.echo")
    async def echo(ctx: JobContext, value: int) -> int:
        return value

    runner = JobRunner(queue, [echo], poll_interval=0.05)
    result = await queue.enqueue(
        "jobs",
        echo.encode_input(1),
        headers={"taquba_jobs.job": "tests.echo", "taquba_jobs.time_limit": "soon"},
    )
    async with serving(runner):
        with pytest.raises(JobFailed) as info:
            await runner.handle(echo, result.id).result()
    assert info.value.error_type == "taquba_jobs.SerializationError"
    assert "time limit" in info.value.message
    assert info.value.permanent
