"""Running jobs: results, failures, retries, context, cancellation, restarts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import trio

import taquba
import taquba_jobs
from taquba import CancelOutcome, JobStatus, MockClock, PermanentFailure, QueueConfig, Store
from taquba.testing import open_test_queue
from taquba_jobs import (
    Job,
    JobCancelled,
    JobContext,
    JobFailed,
    JobRunner,
    ResultNotFound,
    UnknownJob,
    job,
)
from taquba_jobs._records import decode_result

FAST_RETRY = QueueConfig(retry_backoff_base=0, lease_duration=30)


@dataclass(frozen=True)
class Pair:
    a: int
    b: int


@dataclass(frozen=True)
class Sum:
    total: int
    by: str


@job(name="tests.add")
async def add(ctx: JobContext, pair: Pair) -> Sum:
    return Sum(pair.a + pair.b, ctx.job_id)


@job(name="tests.echo")
async def echo(ctx: JobContext, text: str) -> str:
    return text


def runner_for(queue: taquba.Queue, *jobs: Job[Any, Any], **options: Any) -> JobRunner:
    options.setdefault("poll_interval", 0.05)
    return JobRunner(queue, jobs, **options)


async def test_submit_run_and_await_a_typed_result(queue: taquba.Queue, serving: Any) -> None:
    runner = runner_for(queue, add)
    async with serving(runner):
        handle = await runner.submit(add, Pair(2, 3))
        assert handle.newly_submitted
        result = await handle.result()
    assert result == Sum(5, handle.job_id)
    assert await handle.done()
    assert await handle.result() == result  # again, from the store
    stored = await queue.store.get_blob(runner.result_path(handle.job_id))
    assert stored is not None
    record = decode_result(stored)
    assert (record.status, record.attempts) == ("succeeded", 1)
    assert record.finished_at == queue.clock.now_ms()
    assert runner.statistics().succeeded == 1


async def test_submit_without_key_always_creates_a_new_job(queue: taquba.Queue) -> None:
    runner = runner_for(queue, echo)
    first = await runner.submit(echo, "x")
    second = await runner.submit(echo, "x")
    assert first.job_id != second.job_id
    assert first.newly_submitted
    assert second.newly_submitted
    assert (await queue.stats("jobs")).pending == 2


async def test_done_does_not_wait(queue: taquba.Queue, serving: Any) -> None:
    runner = runner_for(queue, echo)
    handle = await runner.submit(echo, "later")
    assert not await handle.done()
    async with serving(runner):
        await handle.wait()
        assert await handle.done()
    assert await handle.result() == "later"


async def test_results_survive_a_restart_and_a_new_runner_fetches_them_by_id(
    store: Store, serving: Any
) -> None:
    async with open_test_queue(store) as queue:
        runner = runner_for(queue, add)
        async with serving(runner):
            handle = await runner.submit(add, Pair(20, 22))
            assert (await handle.result()).total == 42
        job_id = handle.job_id
    async with open_test_queue(store) as queue:
        fresh = runner_for(queue, add)
        again = fresh.handle(add, job_id)
        assert not again.newly_submitted
        assert await again.done()
        assert await again.result() == Sum(42, job_id)  # no serving needed: it is stored


async def test_awaiting_after_the_queue_record_is_gone_reads_the_blob(
    queue: taquba.Queue, serving: Any
) -> None:
    runner = runner_for(queue, echo)
    async with serving(runner):
        handle = await runner.submit(echo, "done")
        await handle.result()
    assert await queue.get_job(handle.job_id) is None  # acked without keep_done
    assert await runner.handle(echo, handle.job_id).result() == "done"


async def test_unknown_ids_have_no_result(queue: taquba.Queue) -> None:
    runner = runner_for(queue, echo)
    handle = runner.handle(echo, "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert not await handle.done()
    with pytest.raises(ResultNotFound) as info:
        await handle.result()
    assert info.value.job_id == handle.job_id
    with pytest.raises(ResultNotFound):
        await handle.wait()


async def test_many_handles_on_one_job_all_resolve(queue: taquba.Queue, serving: Any) -> None:
    release = trio.Event()

    @job(name="tests.gate")
    async def gate(ctx: JobContext, value: int) -> int:
        await release.wait()
        return value * 2

    runner = runner_for(queue, gate)
    results: list[int] = []
    async with serving(runner):
        first = await runner.submit(gate, 21)
        async with trio.open_nursery() as nursery:
            for _ in range(5):

                async def wait_one() -> None:
                    results.append(await runner.handle(gate, first.job_id).result())

                nursery.start_soon(wait_one)
            await trio.testing.wait_all_tasks_blocked()
            assert runner.statistics().waiting_handles == 5
            release.set()
    assert results == [42] * 5
    assert runner.statistics().waiting_handles == 0


# ------------------------------------------------------------------------------- failures


async def test_a_permanent_failure_dead_letters_with_a_recorded_outcome(
    queue: taquba.Queue, serving: Any
) -> None:
    calls = Counter[str]()

    @job(name="tests.refuse")
    async def refuse(ctx: JobContext, value: int) -> int:
        calls["refuse"] += 1
        try:
            raise KeyError(value)
        except KeyError as exc:
            raise PermanentFailure(f"no such record {value}") from exc

    @job(name="tests.strict", permanent_errors=(ValueError,))
    async def strict(ctx: JobContext, value: int) -> int:
        calls["strict"] += 1
        raise ValueError("bad value")

    runner = runner_for(queue, refuse, strict)
    async with serving(runner):
        first = await runner.submit(refuse, 7)
        second = await runner.submit(strict, 1)
        with pytest.raises(JobFailed) as info:
            await first.result()
        with pytest.raises(JobFailed) as info2:
            await second.result()
    assert info.value.error_type == "builtins.KeyError"
    assert info.value.message == "no such record 7"
    assert info.value.permanent
    assert info.value.attempts == 1
    assert info2.value.error_type == "builtins.ValueError"
    assert info2.value.permanent
    assert calls == {"refuse": 1, "strict": 1}
    dead = await queue.get_job(first.job_id)
    assert dead is not None
    assert dead.status is JobStatus.DEAD
    assert dead.last_error == "builtins.KeyError: no such record 7"
    assert await first.done()
    await first.wait()  # the failure is not raised by wait
    with pytest.raises(JobFailed):
        await first.result()  # raised again, from the store


async def test_transient_failures_are_retried_per_the_queue_config(
    queue: taquba.Queue, serving: Any
) -> None:
    attempts: list[int] = []

    @job(name="tests.flaky")
    async def flaky(ctx: JobContext, fail_times: int) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt <= fail_times:
            raise ConnectionError(f"attempt {ctx.attempt}")
        return ctx.attempt

    runner = runner_for(queue, flaky)
    async with serving(runner):
        assert await (await runner.submit(flaky, 2)).result() == 3  # queue max_attempts=3
        attempts.clear()
        handle = await runner.submit(flaky, 10)
        with pytest.raises(JobFailed) as info:
            await handle.result()
    assert attempts == [1, 2, 3]
    assert info.value.error_type == "builtins.ConnectionError"
    assert info.value.message == "attempt 3"
    assert not info.value.permanent  # an exhausted transient failure stays transient
    assert info.value.attempts == 3
    record = await queue.get_job(handle.job_id)
    assert record is not None
    assert record.status is JobStatus.DEAD


async def test_max_attempts_per_job_and_per_submission(queue: taquba.Queue, serving: Any) -> None:
    attempts = Counter[str]()

    @job(name="tests.once", max_attempts=1)
    async def once(ctx: JobContext, tag: str) -> None:
        attempts[tag] += 1
        raise RuntimeError(tag)

    runner = runner_for(queue, once)
    async with serving(runner):
        with pytest.raises(JobFailed):
            await (await runner.submit(once, "job default")).result()
        with pytest.raises(JobFailed):
            await (await runner.submit(once, "override", max_attempts=2)).result()
    assert attempts == {"job default": 1, "override": 2}


async def test_unknown_jobs_are_refused_at_submit_and_dead_lettered_at_run(
    queue: taquba.Queue, serving: Any
) -> None:
    producer = runner_for(queue, add, echo)
    worker = runner_for(queue, echo)  # does not know tests.add
    with pytest.raises(UnknownJob):
        await worker.submit(add, Pair(1, 1))
    handle = await producer.submit(add, Pair(1, 1))
    async with serving(worker):
        with pytest.raises(JobFailed) as info:
            await handle.result()
    assert info.value.error_type == "taquba_jobs.UnknownJob"
    assert info.value.permanent
    assert (await queue.stats("jobs")).dead == 1


async def test_inputs_that_do_not_match_are_refused_at_submit(queue: taquba.Queue) -> None:
    runner = runner_for(queue, add)
    with pytest.raises(taquba.TypeMismatch, match=r"input\.b: expected int, got str"):
        await runner.submit(add, Pair(1, "2"))  # type: ignore[arg-type]
    with pytest.raises(taquba.TypeMismatch, match="expected Pair, got dict"):
        await runner.submit(add, {"a": 1, "b": 2})  # type: ignore[arg-type]
    assert await queue.list_jobs("jobs", JobStatus.PENDING) == taquba.JobPage([], None)


async def test_a_stored_input_that_no_longer_decodes_fails_permanently(
    queue: taquba.Queue, serving: Any
) -> None:
    async def as_text(ctx: JobContext, value: str) -> str:
        return value

    async def as_number(ctx: JobContext, value: int) -> int:
        return value

    old = Job(as_text, name="tests.changed")
    new = Job(as_number, name="tests.changed")  # the input type changed incompatibly
    handle = await runner_for(queue, old).submit(old, "text")
    async with serving(runner_for(queue, new)):
        with pytest.raises(JobFailed) as info:
            await handle.result()
    assert info.value.error_type == "taquba_jobs.TypeMismatch"
    assert "input: expected int, got str" in info.value.message


async def test_an_output_of_the_wrong_type_fails_permanently(
    queue: taquba.Queue, serving: Any
) -> None:
    @job(name="tests.liar")
    async def liar(ctx: JobContext, value: int) -> int:
        return "not an int"  # type: ignore[return-value]

    runner = runner_for(queue, liar)
    async with serving(runner):
        with pytest.raises(JobFailed) as info:
            await (await runner.submit(liar, 1)).result()
    assert info.value.error_type == "taquba_jobs.TypeMismatch"
    assert info.value.permanent


async def test_reading_a_result_with_another_job_is_a_type_mismatch(
    queue: taquba.Queue, serving: Any
) -> None:
    runner = runner_for(queue, add, echo)
    async with serving(runner):
        handle = await runner.submit(echo, "text")
        await handle.result()
    with pytest.raises(taquba.TypeMismatch, match=r"tests\.echo"):
        await runner.handle(add, handle.job_id).result()


async def test_a_job_dead_lettered_by_the_queue_reports_the_queue_reason(
    clock: MockClock,
) -> None:
    """No runner recorded an outcome (the lease expired on the last attempt)."""
    async with open_test_queue(clock=clock, config=QueueConfig(max_attempts=1)) as queue:
        runner = runner_for(queue, echo)
        handle = await runner.submit(echo, "x")
        claim = await queue.claim("jobs")  # a worker that then vanishes
        assert claim is not None
        clock.advance(60)
        await queue.reap_now()
        with pytest.raises(JobFailed) as info:
            await handle.result()
    assert info.value.error_type == "taquba.DeadLettered"
    assert info.value.message == "lease expired"
    assert not info.value.permanent


# ------------------------------------------------------------------------------- context


async def test_the_context_describes_the_attempt_and_extends_the_lease(
    queue: taquba.Queue, serving: Any
) -> None:
    seen: dict[str, Any] = {}

    @job(name="tests.inspect")
    async def inspect_ctx(ctx: JobContext, value: int) -> int:
        before = ctx.lease.expires_at
        assert before is not None
        queue_clock = ctx.queue.clock
        assert isinstance(queue_clock, MockClock)
        queue_clock.advance(20)  # most of the 30 s lease is gone
        ctx.lease.ensure_at_least(60)
        seen.update(
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            max_attempts=ctx.max_attempts,
            key=ctx.idempotency_key,
            job=ctx.job,
            runner=ctx.runner,
            extended=(ctx.lease.expires_at or 0) - before,
            cancel=ctx.cancel_requested,
            repr=repr(ctx),
        )
        ctx.raise_if_cancel_requested()
        return value

    runner = runner_for(queue, inspect_ctx)
    async with serving(runner):
        handle = await runner.submit(inspect_ctx, 1, idempotency_key="inspect-1")
        assert await handle.result() == 1
    assert seen["job_id"] == handle.job_id
    assert seen["attempt"] == 1
    assert seen["max_attempts"] == 3
    assert seen["key"] == "inspect-1"
    assert seen["job"] is inspect_ctx
    assert seen["runner"] is runner
    assert seen["extended"] >= 50_000  # now + 65 s instead of start + 30 s
    assert seen["cancel"] is False
    assert "tests.inspect" in seen["repr"]


async def test_a_job_submits_children_from_its_context(queue: taquba.Queue, serving: Any) -> None:
    @job(name="tests.square")
    async def square(ctx: JobContext, value: int) -> int:
        return value * value

    @job(name="tests.sum_of_squares")
    async def sum_of_squares(ctx: JobContext, upto: int) -> int:
        handles = [
            await ctx.submit(square, i, idempotency_key=f"{ctx.job_id}/{i}")
            for i in range(1, upto + 1)
        ]
        return sum([await h.result() for h in handles])

    runner = runner_for(queue, square, sum_of_squares, concurrency=4)
    async with serving(runner):
        assert await (await runner.submit(sum_of_squares, 5)).result() == 55
    assert runner.statistics().executions == 6


async def test_scheduled_jobs_run_when_their_time_comes(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    runner = runner_for(queue, echo)
    async with serving(runner):
        handle = await runner.submit(echo, "later", delay=3600)
        await trio.sleep(0.2)
        assert not await handle.done()
        clock.advance(3600)
        assert await handle.result() == "later"


async def test_an_expired_lease_redelivers_and_the_second_delivery_settles(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    started = trio.Event()
    attempts: list[int] = []

    @job(name="tests.stuck_once")
    async def stuck_once(ctx: JobContext, value: int) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            started.set()
            await trio.sleep_forever()  # the lease runs out under us
        return ctx.attempt

    runner = runner_for(queue, stuck_once)
    async with serving(runner):
        handle = await runner.submit(stuck_once, 0)
        await started.wait()
        clock.advance(31)  # past the 30 s lease: the reaper requeues, the first run is cut
        assert await handle.result() == 2
    assert attempts == [1, 2]


async def test_submission_ids_are_ordered_within_one_millisecond(
    queue: taquba.Queue, serving: Any
) -> None:
    """Reference §16 item 28: ids from one (mock) millisecond are monotonic and run FIFO."""
    order: list[int] = []

    @job(name="tests.record")
    async def record(ctx: JobContext, value: int) -> None:
        order.append(value)

    runner = runner_for(queue, record, concurrency=1)
    handles = [await runner.submit(record, i) for i in range(50)]
    ids = [h.job_id for h in handles]
    assert ids == sorted(ids)
    assert len(set(ids)) == 50
    async with serving(runner):
        for handle in handles:
            await handle.result()
    assert order == list(range(50))


# ------------------------------------------------------------------------------- cancellation


async def test_cancelling_a_pending_job_records_a_cancelled_outcome(
    queue: taquba.Queue, serving: Any
) -> None:
    ran: list[str] = []

    @job(name="tests.never")
    async def never(ctx: JobContext, value: str) -> str:
        ran.append(value)
        return value

    runner = runner_for(queue, never)
    handle = await runner.submit(never, "x")
    assert await runner.cancel(handle.job_id) is CancelOutcome.REMOVED
    async with serving(runner):
        with pytest.raises(JobCancelled) as info:
            await handle.result()
        await trio.sleep(0.1)
    assert info.value.job_id == handle.job_id
    assert ran == []
    assert await handle.done()
    with pytest.raises(JobCancelled):
        await handle.result()  # raised again, from the store
    assert await runner.cancel(handle.job_id) is CancelOutcome.NOT_FOUND
    assert runner.statistics().cancelled == 1


async def test_cancelling_a_running_job_interrupts_it(queue: taquba.Queue, serving: Any) -> None:
    started = trio.Event()
    cleaned_up: list[bool] = []

    @job(name="tests.long")
    async def long_job(ctx: JobContext, value: int) -> int:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cleaned_up.append(True)
        return value

    runner = runner_for(queue, long_job)
    async with serving(runner):
        handle = await runner.submit(long_job, 1)
        await started.wait()
        assert await runner.cancel(handle.job_id) is CancelOutcome.REQUESTED
        with pytest.raises(JobCancelled):
            await handle.result()
    assert cleaned_up == [True]
    assert await queue.get_job(handle.job_id) is None  # settled (acked): not a dead letter
    assert (await queue.stats("jobs")).dead == 0


async def test_a_non_interruptible_job_observes_its_cancellation(
    queue: taquba.Queue, serving: Any
) -> None:
    started = trio.Event()

    @job(name="tests.polite", interruptible=False)
    async def polite(ctx: JobContext, value: int) -> int:
        started.set()
        await ctx.wait_cancel_requested()
        with trio.CancelScope(shield=True):
            await trio.sleep(0.01)  # e.g. flush partial work
        ctx.raise_if_cancel_requested()
        return value

    @job(name="tests.stubborn", interruptible=False)
    async def stubborn(ctx: JobContext, value: int) -> int:
        started.set()
        await ctx.wait_cancel_requested()
        return value  # finishes anyway: its result stands

    runner = runner_for(queue, polite, stubborn)
    async with serving(runner):
        handle = await runner.submit(polite, 1)
        await started.wait()
        await runner.cancel(handle.job_id)
        with pytest.raises(JobCancelled):
            await handle.result()
        started = trio.Event()
        handle = await runner.submit(stubborn, 2)
        await started.wait()
        await runner.cancel(handle.job_id)
        assert await handle.result() == 2


# ------------------------------------------------------------------------------- lifecycle


async def test_shutdown_lets_jobs_in_flight_finish(queue: taquba.Queue) -> None:
    started = trio.Event()
    finished: list[int] = []

    @job(name="tests.slow")
    async def slow(ctx: JobContext, value: int) -> int:
        started.set()
        await trio.sleep(0.2)
        finished.append(value)
        return value

    runner = runner_for(queue, slow)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.serve)
        handle = await runner.submit(slow, 5)
        await started.wait()
        runner.shutdown()
    assert finished == [5]
    assert await handle.result() == 5


async def test_a_job_stopped_by_shutdown_on_its_last_attempt_records_why(
    clock: MockClock,
) -> None:
    started = trio.Event()

    @job(name="tests.hang", max_attempts=1)
    async def hang(ctx: JobContext, value: int) -> int:
        started.set()
        await trio.sleep_forever()
        return value

    async with open_test_queue(clock=clock) as queue:
        runner = runner_for(queue, hang, shutdown_grace=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            handle = await runner.submit(hang, 1)
            await started.wait()
            runner.shutdown()
        with pytest.raises(JobFailed) as info:
            await handle.result()
    assert info.value.error_type == "taquba_jobs.WorkerStopped"
    assert not info.value.permanent


async def test_serve_runs_once_at_a_time(queue: taquba.Queue, serving: Any) -> None:
    runner = runner_for(queue, echo)
    async with serving(runner):
        with pytest.raises(taquba.UsageError, match="already serving"):
            await runner.serve()
        assert await (await runner.submit(echo, "still serving")).result() == "still serving"


async def test_shutdown_is_sticky_and_idempotent(queue: taquba.Queue) -> None:
    ran: list[str] = []

    @job(name="tests.noted")
    async def noted(ctx: JobContext, value: str) -> str:
        ran.append(value)
        return value

    runner = runner_for(queue, noted)
    assert not runner.shutting_down
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.serve)
        assert await (await runner.submit(noted, "first")).result() == "first"
        runner.shutdown()
        runner.shutdown()  # idempotent
    assert runner.shutting_down
    handle = await runner.submit(noted, "later")  # submitting still works
    with trio.fail_after(5):  # a hang guard: serving a runner that was shut down returns
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
    assert ran == ["first"]
    assert not await handle.done()  # it waits in the queue for a runner that serves
    async with trio.open_nursery() as nursery:
        fresh = runner_for(queue, noted)
        await nursery.start(fresh.serve)
        assert await handle.result() == "later"
        fresh.shutdown()


async def test_shutdown_before_serve_makes_serve_return_at_once(queue: taquba.Queue) -> None:
    runner = runner_for(queue, echo, result_retention=60)
    runner.shutdown()
    handle = await runner.submit(echo, "never run")
    with trio.fail_after(5):  # a hang guard
        await runner.serve()
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)  # started() is still reported
    assert not await handle.done()
    assert (await queue.stats("jobs")).pending == 1


async def test_cancelling_serve_is_the_hard_stop(queue: taquba.Queue) -> None:
    started = trio.Event()
    cancelled: list[int] = []

    @job(name="tests.endless")
    async def endless(ctx: JobContext, value: int) -> int:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(ctx.attempt)
            raise
        return value

    runner = runner_for(queue, endless)
    handle = await runner.submit(endless, 1)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            await started.wait()
            scope.cancel()
    assert scope.cancelled_caught  # serve raised Cancelled, as trio expects
    assert cancelled == [1]
    record = await queue.get_job(handle.job_id)
    assert record is not None
    assert record.status is JobStatus.PENDING  # handed back to the queue
    assert not await handle.done()
    assert not runner.shutting_down  # a hard stop is not a shutdown: serving again works
    started = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.serve)
        await started.wait()
        assert await runner.cancel(handle.job_id) is CancelOutcome.REQUESTED
        with pytest.raises(JobCancelled):
            await handle.result()
        runner.shutdown()


async def test_serve_reports_a_closed_queue(clock: MockClock) -> None:
    store = Store.memory()
    async with open_test_queue(store, clock=clock) as queue:
        runner = runner_for(queue, echo)
    with pytest.raises(taquba.QueueClosed):
        await runner.serve()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"queue_name": ""}, "queue_name"),
        ({"result_prefix": "a//b"}, "result_prefix"),
        ({"result_prefix": "../up"}, "result_prefix"),
        ({"queue_name": "a/../b"}, "pass result_prefix"),
        ({"result_retention": 0}, "result_retention"),
        ({"sweep_interval": -1}, "sweep_interval"),
        ({"shutdown_grace": float("nan")}, "shutdown_grace"),
    ],
)
async def test_invalid_runner_options(
    queue: taquba.Queue, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(taquba.InvalidArgument, match=message):
        JobRunner(queue, **options)


async def test_the_runner_takes_a_queue_object(queue: taquba.Queue) -> None:
    with pytest.raises(taquba.InvalidArgument, match=r"^queue must be a taquba\.Queue"):
        JobRunner("jobs", [echo])  # type: ignore[arg-type]
    assert JobRunner(queue, [echo], concurrency=3).concurrency == 3


async def test_job_definitions_are_checked(queue: taquba.Queue) -> None:
    def not_async(ctx: JobContext, value: int) -> int:
        return value

    async def one_param(ctx: JobContext) -> int:
        return 0

    async def fine(ctx: JobContext, value: int) -> int:
        return value

    with pytest.raises(taquba.UsageError, match="async def"):
        Job(not_async)  # type: ignore[arg-type]
    with pytest.raises(taquba.UsageError, match="takes"):
        Job(one_param)  # type: ignore[arg-type]
    with pytest.raises(taquba.InvalidArgument, match="name"):
        Job(fine, name="")
    with pytest.raises(taquba.InvalidArgument, match="max_attempts"):
        Job(fine, max_attempts=0)
    with pytest.raises(taquba.InvalidArgument, match="permanent_errors"):
        Job(fine, permanent_errors=(42,))  # type: ignore[arg-type]
    assert Job(fine).name == f"{__name__}:test_job_definitions_are_checked.<locals>.fine"
    assert taquba_jobs.job(fine).name == Job(fine).name
    runner = JobRunner(queue, [Job(fine, name="x")])
    with pytest.raises(taquba.UsageError, match="two jobs"):
        runner.register(Job(fine, name="x"))
    with pytest.raises(taquba.UsageError, match="register takes a Job"):
        runner.register(fine)  # type: ignore[arg-type]
    assert set(runner.jobs) == {"x"}
    assert runner.result_prefix == "jobs-results"
    assert runner.result_path("01J") == "jobs-results/01J"
    assert "x" in repr(runner)


async def test_a_delivery_after_the_outcome_was_stored_settles_without_running(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    """The first delivery stores its result after losing its lease; the redelivery that
    follows finds the stored outcome and acks the job without calling the function again."""
    started = trio.Event()
    release = trio.Event()
    attempts: list[int] = []

    @job(name="tests.late", interruptible=False)
    async def late(ctx: JobContext, value: int) -> int:
        attempts.append(ctx.attempt)
        started.set()
        await release.wait()
        return value + ctx.attempt

    runner = runner_for(queue, late, concurrency=1)
    async with serving(runner):
        handle = await runner.submit(late, 10)
        await started.wait()
        clock.advance(31)  # the lease expires; the reaper requeues the job
        with trio.fail_after(30):  # a hang guard
            while (record := await queue.get_job(handle.job_id)) is None or (  # noqa: ASYNC110
                record.status is not JobStatus.PENDING
            ):
                await trio.sleep(0.01)
        release.set()  # attempt 1 finishes late: its outcome is stored first
        assert await handle.result() == 11
        with trio.fail_after(30):  # a hang guard
            while await queue.get_job(handle.job_id) is not None:  # noqa: ASYNC110
                await trio.sleep(0.01)
    assert attempts == [1]  # attempt 2 was delivered but did not run the function
    assert (await queue.stats("jobs")).done == 1
    assert runner.statistics().executions == 1


async def test_a_payload_of_an_unknown_format_fails_permanently(
    queue: taquba.Queue, serving: Any
) -> None:
    runner = runner_for(queue, echo)
    result = await queue.enqueue(
        "jobs",
        b"\xa1x",
        headers={"taquba_jobs.job": "tests.echo", "taquba_jobs.format": "99"},
    )
    async with serving(runner):
        with pytest.raises(JobFailed) as info:
            await runner.handle(echo, result.id).result()
    assert info.value.error_type == "taquba_jobs.SerializationError"
    assert "99" in info.value.message


# A failed outcome as taquba-jobs 0.5 stored it (result record format 1), byte for byte.
RECORD_FROM_0_5 = (
    b"\x87\xa1v\x01\xa6job_id\xba01JOLDRECORD0000000000000A\xa3job\xaatests.echo"
    b"\xa6status\xa6failed\xa8attempts\x01\xabfinished_at\xcf\x00\x00\x01\xa3\x18\\P\x00"
    b"\xa5error\x83\xa4type\xb8taquba_jobs.TypeMismatch\xa7message\xbcinput: expected int, "
    b"got str\xa9permanent\xc3"
)


async def test_outcomes_stored_by_earlier_versions_read_the_same(queue: taquba.Queue) -> None:
    """The stored ``error_type`` names are stable: a 0.5 record raises what it raised then."""
    runner = runner_for(queue, echo)
    job_id = "01JOLDRECORD0000000000000A"
    await queue.store.put_blob(runner.result_path(job_id), RECORD_FROM_0_5)
    handle = runner.handle(echo, job_id)
    assert await handle.done()
    with pytest.raises(JobFailed) as info:
        await handle.result()
    assert (info.value.error_type, info.value.message) == (
        "taquba_jobs.TypeMismatch",
        "input: expected int, got str",
    )
    assert (info.value.permanent, info.value.attempts) == (True, 1)


async def test_an_unreadable_stored_result_is_a_data_error(queue: taquba.Queue) -> None:
    runner = runner_for(queue, echo)
    handle = await runner.submit(echo, "x")
    await queue.store.put_blob(runner.result_path(handle.job_id), b"\x81\xa1v\x02")
    with pytest.raises(taquba.DataError, match="unsupported result record format"):
        await handle.result()


class Opaque:
    """Not a type the codec can store."""


def test_an_unsupported_type_is_the_cores_usage_error() -> None:
    async def takes_it(ctx: JobContext, value: Opaque) -> int:
        return 0

    async def returns_it(ctx: JobContext, value: int) -> Opaque:
        return Opaque()

    with pytest.raises(
        taquba.UnsupportedType,
        match=r"^input type of job 'tests\.in': taquba cannot serialize values of type Opaque$",
    ) as info:
        Job(takes_it, name="tests.in")
    assert isinstance(info.value, taquba.UsageError)
    assert isinstance(info.value.__cause__, taquba.UnsupportedType)  # the codec's own error
    with pytest.raises(taquba.UnsupportedType, match=r"^output type of job 'tests\.out': "):
        Job(returns_it, name="tests.out")
