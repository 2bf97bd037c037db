"""Every end of a job wakes the handles already waiting for it (issue #14).

An outcome a runner records reaches waiting handles in memory. The ends the queue decides
alone reach them through `taquba.Queue.wait_for_completion`: a lease that runs out on the last
attempt (the reaper dead-letters the job), a cancel through the queue, a dead record swept by
retention. Each test starts the waiter first, then ends the job, and bounds the wait only to
turn a hang into a failure (no timing is asserted).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import taquba
from taquba import CancelOutcome, JobStatus, MockClock, QueueConfig
from taquba.testing import open_test_queue
from taquba_jobs import (
    JobCancelled,
    JobContext,
    JobFailed,
    JobHandle,
    JobRunner,
    ResultNotFound,
    job,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

HANG_GUARD = 10  # seconds: only turns a waiter that never wakes into a failure
LEASE = 30.0


@job(name="tests.echo")
async def echo(ctx: JobContext, text: str) -> str:
    return text


def runner_for(queue: taquba.Queue, *jobs: Any, **options: Any) -> JobRunner:
    options.setdefault("poll_interval", 0.05)
    return JobRunner(queue, jobs, **options)


async def waiting(
    nursery: trio.Nursery,
    queue: taquba.Queue,
    handle: JobHandle[Any],
    into: list[object],
) -> None:
    """Start a task waiting for ``handle``; return once its wait is registered everywhere.

    The task appends what `JobHandle.result` gave: the value, or the exception it raised.

    The handle registers with the queue's completion notifications before the queue reads
    the job, so once that read returned, any end of the job wakes it. (Waiting for the trio
    tasks to block is not enough: storage calls run on threads.)
    """
    looked = trio.Event()
    get_job = queue.get_job

    async def noting_get_job(job_id: str) -> taquba.JobRecord | None:
        try:
            return await get_job(job_id)
        finally:
            if job_id == handle.job_id:
                looked.set()

    queue.get_job = noting_get_job  # type: ignore[method-assign]

    async def wait() -> None:
        try:
            into.append(await handle.result())
        except Exception as exc:
            into.append(exc)

    nursery.start_soon(wait)
    await looked.wait()
    queue.get_job = get_job  # type: ignore[method-assign]
    assert into == []  # really waiting


async def ended(
    queue: taquba.Queue, handle: JobHandle[Any], end: Callable[[], Awaitable[object]]
) -> object:
    """Wait for ``handle`` in a task, call ``end``, and return what the waiter got."""
    got: list[object] = []
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            await waiting(nursery, queue, handle, got)
            await end()
    assert len(got) == 1
    return got[0]


# ------------------------------------------------------------------------ the reaper


@pytest.mark.parametrize("interruptible", [True, False])
async def test_a_waiter_wakes_when_the_reaper_dead_letters_the_last_attempt(
    clock: MockClock, interruptible: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A job outlives its lease on its last attempt (the loop stalls, so renewal cannot run:
    the queue's clock jumps past the lease at once). The reaper dead-letters it; the handle
    already waiting gets the queue's reason, and a non-interruptible function that finishes
    late does not change the outcome afterwards."""
    started = trio.Event()
    release = trio.Event()

    @job(name="tests.overrun", interruptible=interruptible)
    async def overrun(ctx: JobContext, value: int) -> int:
        started.set()
        if interruptible:
            await trio.sleep_forever()
        with trio.CancelScope(shield=True):  # ignores the lease loss: finishes late
            await release.wait()
        return value

    config = QueueConfig(lease_duration=LEASE, retry_backoff_base=0, max_attempts=3)
    async with open_test_queue(clock=clock, config=config) as queue:
        runner = runner_for(queue, overrun)
        async with trio.open_nursery() as serving:
            await serving.start(runner.serve)
            handle = await runner.submit(overrun, 7, max_attempts=1)
            await started.wait()

            async def stall_past_the_lease() -> None:
                clock.advance(LEASE + 1)  # the background reaper ends the claim

            try:
                with caplog.at_level(logging.WARNING, logger="taquba_jobs"):
                    got = await ended(queue, handle, stall_past_the_lease)
            finally:
                release.set()
                runner.shutdown()
        assert isinstance(got, JobFailed)
        assert got.error_type == "taquba.DeadLettered"
        assert got.message == "lease expired"
        assert not got.permanent
        assert got.attempts == 1
        # A new look agrees: the late result was discarded, not stored over the verdict.
        with pytest.raises(JobFailed) as again:
            await runner.handle(overrun, handle.job_id).result()
        assert (again.value.error_type, again.value.message, again.value.attempts) == (
            "taquba.DeadLettered",
            "lease expired",
            1,
        )
        record = await queue.get_job(handle.job_id)
        assert record is not None
        assert record.status is JobStatus.DEAD
    # The worker's log says what happened: no redelivery is promised.
    messages = [r.getMessage() for r in caplog.records if r.name == "taquba_jobs"]
    assert any("outlived its lease on its last attempt" in m for m in messages), messages
    assert any("will not deliver it again" in m for m in messages), messages
    assert not any("delivers it again" in m for m in messages), messages


async def test_a_waiter_wakes_when_the_reaper_dead_letters_an_unserved_claim(
    clock: MockClock,
) -> None:
    """A worker that claimed the job and vanished: no runner of this process is involved."""
    config = QueueConfig(lease_duration=LEASE, max_attempts=1)
    async with open_test_queue(clock=clock, config=config) as queue:
        runner = runner_for(queue, echo)
        handle = await runner.submit(echo, "x")
        assert await queue.claim("jobs") is not None

        async def reap() -> None:
            clock.advance(LEASE + 1)
            await queue.reap_now()

        got = await ended(queue, handle, reap)
    assert isinstance(got, JobFailed)
    assert got.error_type == "taquba.DeadLettered"


async def test_the_log_says_a_lease_lost_before_the_last_attempt_is_delivered_again(
    clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    started = trio.Event()

    @job(name="tests.stuck_once")
    async def stuck_once(ctx: JobContext, value: int) -> int:
        if ctx.attempt == 1:
            started.set()
            await trio.sleep_forever()
        return ctx.attempt

    config = QueueConfig(lease_duration=LEASE, retry_backoff_base=0, max_attempts=3)
    async with open_test_queue(clock=clock, config=config) as queue:
        runner = runner_for(queue, stuck_once)
        async with trio.open_nursery() as serving:
            await serving.start(runner.serve)
            handle = await runner.submit(stuck_once, 0)
            await started.wait()

            async def stall_past_the_lease() -> None:
                clock.advance(LEASE + 1)

            with caplog.at_level(logging.WARNING, logger="taquba_jobs"):
                got = await ended(queue, handle, stall_past_the_lease)
            runner.shutdown()
    assert got == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "taquba_jobs"]
    assert any("attempt 1 of 3: the queue delivers it again" in m for m in messages), messages


# ------------------------------------------------------------------------ cancellation


async def test_a_waiter_wakes_when_the_runner_cancels_a_pending_job(
    queue: taquba.Queue,
) -> None:
    runner = runner_for(queue, echo)
    handle = await runner.submit(echo, "never")
    outcomes: list[CancelOutcome] = []

    async def cancel() -> None:
        outcomes.append(await runner.cancel(handle.job_id))

    got = await ended(queue, handle, cancel)
    assert outcomes == [CancelOutcome.REMOVED]
    assert isinstance(got, JobCancelled)
    assert got.job_id == handle.job_id


async def test_a_waiter_wakes_when_the_queue_cancels_the_job_directly(
    queue: taquba.Queue,
) -> None:
    """`taquba.Queue.cancel` records no outcome: the waiter gets a clear `ResultNotFound`."""
    runner = runner_for(queue, echo)
    handle = await runner.submit(echo, "never")

    async def cancel() -> None:
        assert await queue.cancel(handle.job_id) is CancelOutcome.REMOVED

    got = await ended(queue, handle, cancel)
    assert isinstance(got, ResultNotFound)
    assert got.job_id == handle.job_id
    assert "ended without a stored outcome" in str(got)
    assert "taquba.Queue.cancel" in str(got)


async def test_a_waiter_wakes_when_a_running_job_is_cancelled(
    queue: taquba.Queue, serving: Any
) -> None:
    started = trio.Event()

    @job(name="tests.forever")
    async def forever(ctx: JobContext, value: int) -> int:
        started.set()
        await trio.sleep_forever()
        return value

    runner = runner_for(queue, forever)
    async with serving(runner):
        handle = await runner.submit(forever, 1)
        await started.wait()

        async def cancel() -> None:
            assert await runner.cancel(handle.job_id) is CancelOutcome.REQUESTED

        got = await ended(queue, handle, cancel)
    assert isinstance(got, JobCancelled)


async def test_a_job_cancelled_before_its_claim_ran_settles_as_cancelled(
    queue: taquba.Queue, serving: Any
) -> None:
    """`JobRunner.cancel` records the cancellation before the queue's cancel; a worker that
    claims the job in between finds it and settles without running the function."""
    ran: list[str] = []

    @job(name="tests.record")
    async def record(ctx: JobContext, value: str) -> str:
        ran.append(value)
        return value

    runner = runner_for(queue, record)
    handle = await runner.submit(record, "x")
    claims: list[taquba.Claim] = []
    queue_cancel = queue.cancel

    async def cancel_after_a_claim(job_id: str) -> CancelOutcome:
        claim = await queue.claim("jobs")  # the claim lands between the runner's two steps
        assert claim is not None
        claims.append(claim)
        return await queue_cancel(job_id)

    queue.cancel = cancel_after_a_claim  # type: ignore[method-assign]
    assert await runner.cancel(handle.job_id) is CancelOutcome.REQUESTED
    with trio.fail_after(HANG_GUARD), pytest.raises(JobCancelled):
        await handle.result()  # the recorded cancellation stands
    await queue.nack(claims[0], "handed back")  # that worker never ran the function
    async with serving(runner):
        with trio.fail_after(HANG_GUARD):
            while await queue.get_job(handle.job_id) is not None:  # noqa: ASYNC110
                await trio.sleep(0.01)
    assert ran == []
    assert (await queue.stats("jobs")).dead == 0  # settled as cancelled: acknowledged


# ------------------------------------------------------------------------ retention


async def test_a_waiter_whose_job_is_swept_before_it_looks_gets_a_clear_error(
    clock: MockClock,
) -> None:
    """The reaper dead-letters the job while a handle waits, and the queue's retention sweeps
    the dead record before the woken waiter reads it (held back here until the sweep is
    done): the waiter gets `ResultNotFound` saying so, not an endless wait. A later look,
    with nothing left, gets the same at once."""
    config = QueueConfig(lease_duration=LEASE, max_attempts=1, dead_retention=60)
    async with open_test_queue(clock=clock, config=config) as queue:
        runner = runner_for(queue, echo)
        handle = await runner.submit(echo, "x")
        assert await queue.claim("jobs") is not None
        swept = trio.Event()
        reads = 0
        get_job = queue.get_job

        async def get_job_after_the_sweep(job_id: str) -> taquba.JobRecord | None:
            nonlocal reads
            reads += 1
            if reads > 1:  # the woken waiter's look
                await swept.wait()
            return await get_job(job_id)

        queue.get_job = get_job_after_the_sweep  # type: ignore[method-assign]

        async def reap_and_sweep() -> None:
            clock.advance(LEASE + 1)
            await queue.reap_now()  # (or the background reaper did)
            clock.advance(61)
            await queue.sweep_now()
            swept.set()

        got = await ended(queue, handle, reap_and_sweep)
        assert isinstance(got, ResultNotFound)
        assert "ended without a stored outcome" in str(got)
        assert "swept" in str(got)
        with trio.fail_after(HANG_GUARD), pytest.raises(ResultNotFound):
            await handle.result()


async def test_a_waiter_whose_job_ends_without_an_outcome_gets_a_clear_error(
    queue: taquba.Queue,
) -> None:
    """A job that ends in the queue with no outcome stored (as when result retention swept
    it before the waiter looked): the waiter gets `ResultNotFound`, not an endless wait."""
    runner = runner_for(queue, echo)
    handle = await runner.submit(echo, "x")

    async def ack_without_an_outcome() -> None:
        claim = await queue.claim("jobs")
        assert claim is not None
        await queue.ack(claim)

    got = await ended(queue, handle, ack_without_an_outcome)
    assert isinstance(got, ResultNotFound)
    assert "retention swept it" in str(got)


async def test_a_result_swept_by_retention_is_not_found_afterwards(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    runner = runner_for(queue, echo, result_retention=60, sweep_interval=3600)
    async with serving(runner):
        handle = await runner.submit(echo, "x")
        assert await handle.result() == "x"
        with trio.fail_after(HANG_GUARD):
            while await queue.get_job(handle.job_id) is not None:  # noqa: ASYNC110
                await trio.sleep(0.01)
        clock.advance(61)
        assert (await runner.sweep_results_now()).swept == 1
        assert not await handle.done()
        with trio.fail_after(HANG_GUARD), pytest.raises(ResultNotFound):
            await handle.result()


# ------------------------------------------------------------------------ failures


async def test_waiters_raise_the_queue_failure_when_the_queue_closes(clock: MockClock) -> None:
    got: list[object] = []
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery, open_test_queue(clock=clock) as queue:
            runner = runner_for(queue, echo)
            handle = await runner.submit(echo, "x")
            await waiting(nursery, queue, handle, got)
    assert len(got) == 1
    assert isinstance(got[0], taquba.QueueClosed)
