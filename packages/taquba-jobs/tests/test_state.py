"""Per-job state: staged by an attempt, stored with its retry, deleted when the job ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import trio

import taquba
from taquba import MockClock, PermanentFailure, RetryLater, Store
from taquba.testing import Fault, ForwardingQueue, inject_faults, open_test_queue
from taquba_jobs import (
    MAX_STATE_SIZE,
    JobCancelled,
    JobContext,
    JobFailed,
    JobRunner,
    StateTooLarge,
    job,
)
from taquba_jobs._records import StateRecord, decode_state, encode_state, state_key

HANG = 10  # seconds: bounds that only catch hangs


@dataclass(frozen=True)
class Progress:
    done: list[str]


def runner_for(queue: taquba.QueueLike, *jobs: Any, **options: Any) -> JobRunner:
    options.setdefault("poll_interval", 0.05)
    return JobRunner(queue, jobs, **options)


async def stored_state(queue: taquba.QueueLike, job_id: str) -> StateRecord | None:
    raw = await queue.kv_get(state_key("jobs", job_id))
    return decode_state(raw) if raw is not None else None


def stepper(seen: list[tuple[int, Progress | None]], *, fail_until: int) -> Any:
    """A job that records a step per attempt and fails until attempt ``fail_until``."""

    @job(name="tests.state.steps", max_attempts=5)
    async def steps(ctx: JobContext, value: int) -> list[str]:
        progress = await ctx.load_state(Progress)
        seen.append((ctx.attempt, progress))
        done = [*(progress.done if progress else []), f"step-{ctx.attempt}"]
        ctx.stage_state(Progress(done))
        if ctx.attempt < fail_until:
            raise ConnectionError(f"attempt {ctx.attempt}")
        return done

    return steps


async def test_state_staged_by_an_attempt_is_loaded_by_the_next(
    queue: taquba.Queue, serving: Any
) -> None:
    seen: list[tuple[int, Progress | None]] = []
    steps = stepper(seen, fail_until=3)
    runner = runner_for(queue, steps)
    async with serving(runner):
        with trio.fail_after(HANG):
            handle = await runner.submit(steps, 1)
            assert await handle.result() == ["step-1", "step-2", "step-3"]
    assert seen == [
        (1, None),
        (2, Progress(["step-1"])),
        (3, Progress(["step-1", "step-2"])),
    ]
    # Deleted with the ack of the successful attempt.
    assert await stored_state(queue, handle.job_id) is None


async def test_state_carries_over_attempts_that_stage_nothing_and_none_clears_it(
    queue: taquba.Queue, serving: Any
) -> None:
    seen: list[tuple[int, int | None]] = []

    @job(name="tests.state.sparse", max_attempts=5)
    async def sparse(ctx: JobContext, value: int) -> None:
        seen.append((ctx.attempt, await ctx.load_state(int)))
        if ctx.attempt == 1:
            ctx.stage_state(41)
            ctx.stage_state(42)  # the last call of an attempt wins
        if ctx.attempt == 3:
            ctx.stage_state(None)
        if ctx.attempt < 4:
            raise ConnectionError("again")

    runner = runner_for(queue, sparse)
    async with serving(runner):
        with trio.fail_after(HANG):
            await (await runner.submit(sparse, 1)).result()
    assert seen == [(1, None), (2, 42), (3, 42), (4, None)]


async def test_state_is_not_written_on_a_first_attempt_that_succeeds(
    queue: taquba.Queue, serving: Any
) -> None:
    @job(name="tests.state.once")
    async def once(ctx: JobContext, value: int) -> int:
        ctx.stage_state(value)
        return value

    runner = runner_for(queue, once)
    async with serving(runner):
        with trio.fail_after(HANG):
            handle = await runner.submit(once, 7)
            assert await handle.result() == 7
    assert (await queue.kv_scan(b"taquba-jobs/state/")).entries == []
    assert await stored_state(queue, handle.job_id) is None


@pytest.mark.parametrize("end", ["exhausted", "permanent", "cancelled"])
async def test_state_is_deleted_when_the_job_fails_or_is_cancelled(
    queue: taquba.Queue, serving: Any, end: str
) -> None:
    written: list[StateRecord | None] = []

    @job(name="tests.state.ends", max_attempts=3)
    async def ends(ctx: JobContext, value: int) -> int:
        written.append(await stored_state(ctx.queue, ctx.job_id))
        ctx.stage_state(ctx.attempt)
        if ctx.attempt == 2 and end == "permanent":
            raise PermanentFailure("no more")
        if ctx.attempt == 2 and end == "cancelled":
            raise JobCancelled(ctx.job_id)
        raise ConnectionError("again")

    runner = runner_for(queue, ends)
    async with serving(runner):
        with trio.fail_after(HANG):
            handle = await runner.submit(ends, 1)
            with pytest.raises(JobCancelled if end == "cancelled" else JobFailed):
                await handle.result()
    assert written[0] is None
    assert written[1] == StateRecord(1, encode_int(1))  # stored before the retry
    assert await stored_state(queue, handle.job_id) is None  # deleted with the settlement


def encode_int(value: int) -> bytes:
    return taquba.Codec(int).encode(value, path="state")


async def test_state_is_deleted_when_a_retried_job_is_cancelled_while_pending(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    ran = trio.Event()

    @job(name="tests.state.later")
    async def later(ctx: JobContext, value: int) -> int:
        ctx.stage_state(value)
        ran.set()
        raise RetryLater("not yet", retry_after=3600)

    runner = runner_for(queue, later)
    async with serving(runner):  # its shutdown waits for the attempt's settlement
        with trio.fail_after(HANG):
            handle = await runner.submit(later, 5)
            await ran.wait()
    assert (await queue.stats("jobs")).scheduled == 1
    assert await stored_state(queue, handle.job_id) == StateRecord(1, encode_int(5))
    assert await runner.cancel(handle.job_id) is taquba.CancelOutcome.REMOVED
    assert await stored_state(queue, handle.job_id) is None
    with pytest.raises(JobCancelled):
        await handle.result()


async def test_state_of_a_time_limited_attempt_is_kept_for_the_retry(
    queue: taquba.Queue, serving: Any
) -> None:
    seen: list[int | None] = []

    @job(name="tests.state.slow", time_limit=0.05)
    async def slow(ctx: JobContext, value: int) -> int:
        seen.append(await ctx.load_state(int))
        ctx.stage_state(ctx.attempt * 10)
        if ctx.attempt == 1:
            await trio.sleep(HANG)  # cancelled at the limit
        return ctx.attempt

    runner = runner_for(queue, slow)
    async with serving(runner):
        with trio.fail_after(HANG):
            assert await (await runner.submit(slow, 1)).result() == 2
    assert seen == [None, 10]


async def test_state_staged_before_a_shutdown_is_kept_for_the_next_runner(
    queue: taquba.Queue, serving: Any
) -> None:
    started = trio.Event()
    seen: list[int | None] = []

    @job(name="tests.state.long", max_attempts=3)
    async def long(ctx: JobContext, value: int) -> int:
        seen.append(await ctx.load_state(int))
        if ctx.attempt == 1:
            ctx.stage_state(500)  # checkpoint
            started.set()
            await trio.sleep_forever()
        return ctx.attempt

    first = runner_for(queue, long, shutdown_grace=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.serve)
        handle = await first.submit(long, 1)
        await started.wait()
        first.shutdown()
    second = runner_for(queue, long)
    async with serving(second):
        with trio.fail_after(HANG):
            assert await handle.result() == 2
    assert seen == [None, 500]


async def test_state_survives_a_restart(store: Store, clock: MockClock, serving: Any) -> None:
    seen: list[tuple[int, Progress | None]] = []
    ran = trio.Event()

    @job(name="tests.state.restart", max_attempts=5)
    async def restart(ctx: JobContext, value: int) -> list[str]:
        progress = await ctx.load_state(Progress)
        seen.append((ctx.attempt, progress))
        if ctx.attempt == 1:
            ctx.stage_state(Progress(["fetched"]))
            ran.set()
            raise RetryLater("come back later", retry_after=60)
        return progress.done if progress else []

    async with open_test_queue(store, clock=clock) as queue:
        runner = runner_for(queue, restart)
        async with serving(runner):  # its shutdown waits for the attempt's settlement
            with trio.fail_after(HANG):
                handle = await runner.submit(restart, 1)
                await ran.wait()
        assert (await queue.stats("jobs")).scheduled == 1
    clock.advance(61)
    async with open_test_queue(store, clock=clock) as queue:  # a new process
        runner = runner_for(queue, restart)
        async with serving(runner):
            with trio.fail_after(HANG):
                assert await runner.handle(restart, handle.job_id).result() == ["fetched"]
        assert await stored_state(queue, handle.job_id) is None
    assert seen == [(1, None), (2, Progress(["fetched"]))]


async def test_oversized_state_is_refused_and_the_earlier_value_stands(
    queue: taquba.Queue, serving: Any
) -> None:
    refused: list[StateTooLarge] = []
    seen: list[bytes | None] = []

    @job(name="tests.state.big")
    async def big(ctx: JobContext, value: int) -> None:
        seen.append(await ctx.load_state(bytes))
        if ctx.attempt == 1:
            ctx.stage_state(b"small")
            with pytest.raises(StateTooLarge) as info:
                ctx.stage_state(b"x" * MAX_STATE_SIZE)  # a few bytes of framing over
            refused.append(info.value)
            ctx.stage_state(b"x" * (MAX_STATE_SIZE - 5))  # just fits
            ctx.stage_state(b"small")
            raise ConnectionError("again")

    runner = runner_for(queue, big)
    async with serving(runner):
        with trio.fail_after(HANG):
            await (await runner.submit(big, 1)).result()
    assert seen == [None, b"small"]
    (error,) = refused
    assert isinstance(error, taquba.InvalidArgument)
    assert error.limit == MAX_STATE_SIZE
    assert error.size > MAX_STATE_SIZE
    assert str(error).startswith(f"value must encode to at most {MAX_STATE_SIZE} bytes")


async def test_state_values_are_checked_against_their_type(
    queue: taquba.Queue, serving: Any
) -> None:
    errors: list[Exception] = []

    @job(name="tests.state.typed", max_attempts=2)
    async def typed(ctx: JobContext, value: int) -> None:
        if ctx.attempt == 1:
            with pytest.raises(taquba.TypeMismatch):
                ctx.stage_state("text", int)  # type: ignore[arg-type]
            ctx.stage_state(["a", "b"], list[str])
            raise ConnectionError("again")
        assert await ctx.load_state(list[str]) == ["a", "b"]
        try:
            await ctx.load_state(Progress)
        except taquba.TypeMismatch as exc:
            errors.append(exc)

    runner = runner_for(queue, typed)
    async with serving(runner):
        with trio.fail_after(HANG):
            await (await runner.submit(typed, 1)).result()
    assert len(errors) == 1


async def test_a_state_record_of_another_run_is_ignored(queue: taquba.Queue, serving: Any) -> None:
    """A record whose attempt is not an earlier one (left before a requeue) reads as absent."""
    seen: list[int | None] = []

    @job(name="tests.state.stale", max_attempts=3)
    async def stale(ctx: JobContext, value: int) -> None:
        seen.append(await ctx.load_state(int))
        if ctx.attempt == 1:
            await ctx.queue.kv_put(
                state_key("jobs", ctx.job_id), encode_state(StateRecord(7, encode_int(7)))
            )
            raise ConnectionError("again")

    runner = runner_for(queue, stale)
    async with serving(runner):
        with trio.fail_after(HANG):
            await (await runner.submit(stale, 1)).result()
    assert seen == [None, None]


async def test_state_over_the_protocol(queue: taquba.Queue, serving: Any) -> None:
    seen: list[tuple[int, Progress | None]] = []
    steps = stepper(seen, fail_until=2)
    forwarding = ForwardingQueue(queue)
    runner = runner_for(forwarding, steps)
    async with serving(runner):
        with trio.fail_after(HANG):
            handle = await runner.submit(steps, 1)
            assert await handle.result() == ["step-1", "step-2"]
    assert seen == [(1, None), (2, Progress(["step-1"]))]
    assert await stored_state(queue, handle.job_id) is None


async def test_a_swept_job_takes_a_leftover_state_with_it(
    queue: taquba.Queue, clock: MockClock
) -> None:
    """State the queue's own dead-letter left behind goes with the job's retention sweep."""
    steps = stepper([], fail_until=1)
    runner = runner_for(queue, steps, result_retention=60)
    handle = await runner.submit(steps, 1)
    await queue.kv_put(state_key("jobs", handle.job_id), encode_state(StateRecord(1, b"\xc0")))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.serve)
        with trio.fail_after(HANG):
            await handle.result()
        runner.shutdown()
    # The successful first attempt does not look for state (nothing could have staged it).
    assert await stored_state(queue, handle.job_id) is not None
    clock.advance(61)
    assert (await runner.sweep_results_now()).swept == 1
    assert await stored_state(queue, handle.job_id) is None


LEASE = 30


async def test_an_attempt_that_lost_its_lease_stores_no_state(clock: MockClock) -> None:
    """A delivery the reaper took back is a zombie: what it staged is not stored, neither
    while the next delivery runs nor after the job ended."""
    release = trio.Event()
    first_started = trio.Event()
    second_done = trio.Event()
    seen: list[tuple[int, int | None]] = []

    @job(name="tests.state.zombie", interruptible=False, max_attempts=3)
    async def zombie(ctx: JobContext, value: int) -> int:
        seen.append((ctx.attempt, await ctx.load_state(int)))
        if ctx.attempt == 1:
            first_started.set()
            ctx.stage_state(1)
            with trio.CancelScope(shield=True):
                await release.wait()  # outlives its lease
            raise ConnectionError("late failure")
        second_done.set()
        return ctx.attempt

    config = taquba.QueueConfig(lease_duration=LEASE, retry_backoff_base=0)
    async with open_test_queue(clock=clock, config=config) as queue:
        runner = runner_for(queue, zombie)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            with trio.fail_after(HANG):
                handle = await runner.submit(zombie, 1)
                await first_started.wait()
                clock.advance(LEASE + 1)  # the reaper requeues attempt 1's job
                await second_done.wait()
                assert await handle.result() == 2
            release.set()  # the zombie fails late
            runner.shutdown()  # and serve returns once it is done
        assert seen == [(1, None), (2, None)]
        assert await stored_state(queue, handle.job_id) is None


async def test_state_is_deleted_when_the_last_attempt_outlives_its_lease(clock: MockClock) -> None:
    release = trio.Event()
    started = trio.Event()

    @job(name="tests.state.overrun", interruptible=False, max_attempts=2)
    async def overrun(ctx: JobContext, value: int) -> int:
        ctx.stage_state(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("again")
        started.set()
        with trio.CancelScope(shield=True):
            await release.wait()
        return value

    config = taquba.QueueConfig(lease_duration=LEASE, retry_backoff_base=0)
    async with open_test_queue(clock=clock, config=config) as queue:
        runner = runner_for(queue, overrun)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            with trio.fail_after(HANG):
                handle = await runner.submit(overrun, 1)
                await started.wait()
                assert await stored_state(queue, handle.job_id) is not None
                clock.advance(LEASE + 1)  # the reaper dead-letters the last attempt
                with pytest.raises(JobFailed):
                    await handle.result()
            release.set()  # the attempt finishes late
            runner.shutdown()  # and serve returns once it is done
        assert await stored_state(queue, handle.job_id) is None


async def test_state_is_deleted_when_the_worker_stops_during_the_last_attempt(
    queue: taquba.Queue,
) -> None:
    started = trio.Event()

    @job(name="tests.state.stopped", max_attempts=2)
    async def stopped(ctx: JobContext, value: int) -> int:
        ctx.stage_state(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("again")
        started.set()
        await trio.sleep_forever()
        return value

    runner = runner_for(queue, stopped, shutdown_grace=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.serve)
        with trio.fail_after(HANG):
            handle = await runner.submit(stopped, 1)
            await started.wait()
            assert await stored_state(queue, handle.job_id) is not None
        runner.shutdown()
    with pytest.raises(JobFailed) as info:
        await handle.result()
    assert info.value.error_type == "taquba_jobs.WorkerStopped"
    assert await stored_state(queue, handle.job_id) is None


async def test_state_commits_with_the_retry_or_not_at_all(
    queue: taquba.Queue, clock: MockClock, serving: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staged state rides in the nack's transaction: a nack that never commits stores
    nothing, so the attempt after the expired lease starts from the earlier state."""
    seen: list[tuple[int, int | None]] = []
    nacked = trio.Event()
    nack = queue.nack

    async def observed_nack(*args: Any, **kwargs: Any) -> taquba.NackResult:
        try:
            return await nack(*args, **kwargs)
        finally:
            nacked.set()  # the worker's nack is over, whatever its outcome

    monkeypatch.setattr(queue, "nack", observed_nack)
    with inject_faults() as faults:

        @job(name="tests.state.atomic", max_attempts=3)
        async def atomic(ctx: JobContext, value: int) -> int:
            seen.append((ctx.attempt, await ctx.load_state(int)))
            ctx.stage_state(ctx.attempt * 10)
            if ctx.attempt == 1:
                # The next durable write is this attempt's nack: its outcome is lost.
                faults.on_write(Fault.lost(), durable=True)
            if ctx.attempt < 2:
                raise ConnectionError("flaky")
            return value

        runner = runner_for(queue, atomic)
        async with serving(runner):
            with trio.fail_after(HANG):
                handle = await runner.submit(atomic, 7)
                await nacked.wait()
                assert len(faults.injected) == 1
                assert await stored_state(queue, handle.job_id) is None
                clock.advance(31)  # past the lease: the reaper hands the job out again
                assert await queue.reap_now() == 1
                assert await handle.result() == 7
    assert seen == [(1, None), (2, None)]
