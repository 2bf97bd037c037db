"""Runs that must end, and steps that must keep running: dead steps, retry, keep-alive, limits."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from taquba import JobStatus, MockClock, QueueConfig
from taquba_workflow import (
    Continue,
    Fail,
    RunNotRetryable,
    RunSpec,
    RunState,
    RunStatus,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    TerminalStatus,
)
from wf_support import Hook, jobs_in, live_jobs, opened, run_all

if TYPE_CHECKING:
    from collections.abc import Iterator

# The queue's default lease (30 s), immediate retries.
DEFAULT_LEASE = QueueConfig(retry_backoff_base=0)
# Virtual time: slow background ticks (fewer jumps) and a commit deadline no run of jumps
# during one storage call can reach.
VIRTUAL = {"reaper_interval": 5.0, "scheduler_interval": 5.0, "commit_deadline": 3600.0}


@pytest.fixture
def trio_time() -> trio.testing.MockClock:
    """Trio's clock for the test (pytest-trio uses a Clock fixture): real time plus jumps."""
    return trio.testing.MockClock(rate=1.0)


@contextmanager
def autojump(trio_time: trio.testing.MockClock) -> Iterator[None]:
    """Skip trio's idle time (only while the queue is open: its open and close stay real)."""
    trio_time.autojump_threshold = 0.001
    try:
        yield
    finally:
        trio_time.autojump_threshold = math.inf


async def test_every_waiter_wakes_when_the_reaper_dead_letters_the_last_attempt(
    clock: MockClock,
) -> None:
    """A step outliving its lease on its last attempt (no keep-alive) ends its run failed."""
    hook = Hook()
    entered = trio.Event()
    release = trio.Event()

    async def slow(step: Step) -> StepOutcome:
        entered.set()
        await release.wait()  # longer than its lease, and nothing renews it
        return Succeed(b"too late")

    finals: list[RunStatus | None] = []

    async def waiter(runtime: Runtime) -> None:
        finals.append(await runtime.wait_finished("slow"))

    async with opened(clock=clock, config=DEFAULT_LEASE) as queue:
        runtime = Runtime(queue, slow, hook, lease_keep_alive=False, poll_interval=0.05)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.serve)
                await runtime.submit(RunSpec(input=b"", run_id="slow", max_attempts_per_step=1))
                await entered.wait()
                async with trio.open_nursery() as waiters:
                    for _ in range(3):
                        waiters.start_soon(waiter, runtime)
                    await trio.sleep(0.2)  # let them reach their wait (either way they must wake)
                    clock.advance(31)  # the lease expires: the reaper dead-letters the job
                assert len(finals) == 3
                release.set()
                await hook.wait_calls()
                nursery.cancel_scope.cancel()
        reason = "step 0 dead-lettered: lease expired after 1 attempt"
        for final in finals:
            assert final is not None
            assert (final.state, final.step, final.error) == (RunState.FAILED, 0, reason)
        [outcome] = hook.outcomes
        assert (outcome.status, outcome.error) == (TerminalStatus.FAILED, reason)
        status = await runtime.status("slow")
        assert status is not None and status.state is RunState.FAILED


async def test_a_run_whose_process_died_on_the_last_attempt_ends_failed(
    clock: MockClock,
) -> None:
    """Open-time recovery dead-letters such a step; the runtime's scan ends its run."""
    hook = Hook()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, lambda step: _succeed(), hook)
        await runtime.submit(RunSpec(input=b"x", run_id="died", max_attempts_per_step=1))
        claim = await queue.claim("workflow")
        assert claim is not None
        await queue.dead_letter(claim, "claim interrupted by process exit")  # as recovery does
        assert await runtime.end_dead_step_runs_now() == 1
        assert await runtime.end_dead_step_runs_now() == 0  # idempotent: one request
        await run_all(runtime)
        status = await runtime.status("died")
        assert status is not None and status.state is RunState.FAILED
        assert status.error == (
            "step 0 dead-lettered: claim interrupted by process exit after 1 attempt"
        )
        assert [o.status for o in hook.outcomes] == [TerminalStatus.FAILED]
        # The dead step stays in the dead letters; a later scan does nothing with it.
        assert len(await jobs_in(queue, JobStatus.DEAD)) == 1
        assert await runtime.end_dead_step_runs_now() == 0
        # And the run can be retried from that step.
        assert await runtime.retry("died")
        await run_all(runtime)
        status = await runtime.status("died")
        assert status is not None and status.state is RunState.SUCCEEDED


async def _succeed() -> StepOutcome:
    return Succeed(b"ok")


async def test_an_operator_requeue_wins_over_a_pending_end_request(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, lambda step: _succeed())
        await runtime.submit(RunSpec(input=b"", run_id="requeued", max_attempts_per_step=1))
        claim = await queue.claim("workflow")
        assert claim is not None
        await queue.dead_letter(claim, "lease expired")
        assert await runtime.end_dead_step_runs_now() == 1
        [dead] = await jobs_in(queue, JobStatus.DEAD)
        await queue.requeue_dead_job(dead)  # the step runs again; the end request stands down
        await run_all(runtime)
        status = await runtime.status("requeued")
        assert status is not None and status.state is RunState.SUCCEEDED


async def test_retry_reruns_only_from_the_failed_step(clock: MockClock) -> None:
    calls: list[int] = []
    memo_hits: list[tuple[int, bytes | None]] = []
    broken = True

    async def runner(step: Step) -> StepOutcome:
        calls.append(step.number)
        memo_hits.append((step.number, await step.memo.get("work")))
        await step.memo.put("work", b"done %d" % step.number)
        if step.number < 2:
            return Continue(step.payload + b">")
        return Fail("the service is down") if broken else Succeed(step.payload)

    hook = Hook()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook, step_output_replay=True)
        await runtime.submit(RunSpec(input=b"go", run_id="flaky", headers={"t": "1"}))
        await run_all(runtime)
        status = await runtime.status("flaky")
        assert status is not None and (status.state, status.step) == (RunState.FAILED, 2)
        # Resubmission is idempotent: it returns the ended run and runs nothing.
        assert not (await runtime.submit(RunSpec(input=b"go", run_id="flaky"))).newly_submitted
        broken = False
        assert await runtime.retry("flaky")
        status = await runtime.status("flaky")
        assert status is not None and (status.state, status.step) == (RunState.RUNNING, 2)
        await run_all(runtime)
        status = await runtime.status("flaky")
        assert status is not None and status.state is RunState.SUCCEEDED
    assert calls == [0, 1, 2, 2]  # steps 0 and 1 were not run again; the Fail not replayed
    assert memo_hits[-1] == (2, b"done 2")  # the failed step's memo survived for its rerun
    assert [(o.status, o.result, o.headers) for o in hook.outcomes] == [
        (TerminalStatus.FAILED, None, {"t": "1"}),
        (TerminalStatus.SUCCEEDED, b"go>>", {"t": "1"}),
    ]


async def test_only_ended_failed_or_cancelled_runs_are_retried(clock: MockClock) -> None:
    async def runner(step: Step) -> StepOutcome:
        return Succeed(b"") if step.payload == b"ok" else Fail("no")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        with pytest.raises(RunNotRetryable, match="no ended run"):
            await runtime.retry("unknown")
        await runtime.submit(RunSpec(input=b"ok", run_id="ok"))
        assert not await runtime.retry("ok")  # active: nothing to do
        await run_all(runtime)
        with pytest.raises(RunNotRetryable, match="it succeeded"):
            await runtime.retry("ok")
        await runtime.submit(RunSpec(input=b"cancel me", run_id="c"))
        assert await runtime.cancel("c")
        await run_all(runtime)
        status = await runtime.status("c")
        assert status is not None and status.state is RunState.CANCELLED
        await runtime.submit(RunSpec(input=b"bad", run_id="f"))
        await run_all(runtime)
        # Concurrent retries restart each run exactly once.
        results: list[bool] = []

        async def retry(run_id: str) -> None:
            results.append(await runtime.retry(run_id))

        async with trio.open_nursery() as nursery:
            for run_id in ("c", "c", "f", "f", "f"):
                nursery.start_soon(retry, run_id)
        assert sorted(results) == [False, False, False, True, True]
        assert (await live_jobs(queue))["pending"] == 2


async def test_a_five_minute_step_keeps_its_default_lease(
    clock: MockClock, trio_time: trio.testing.MockClock
) -> None:
    """Keep-alive renews the 30 s default lease; the reaper never takes the step away."""
    attempts: list[int] = []

    async def five_minutes(step: Step) -> StepOutcome:
        attempts.append(step.attempt)
        for _ in range(30):
            clock.advance(10)  # the queue's time and trio's move together
            await trio.sleep(10)
        return Succeed(b"done")

    async with opened(clock=clock, config=DEFAULT_LEASE, **VIRTUAL) as queue:
        assert queue.config("workflow").lease_duration == 30
        runtime = Runtime(queue, five_minutes)
        await runtime.submit(RunSpec(input=b"", run_id="long", max_attempts_per_step=1))
        with autojump(trio_time):
            await run_all(runtime)
        status = await runtime.status("long")
        assert status is not None and status.state is RunState.SUCCEEDED
        assert attempts == [1]
        assert (await live_jobs(queue))["dead"] == 0


async def test_a_step_over_its_time_limit_is_retried_then_fails_the_run(
    clock: MockClock, trio_time: trio.testing.MockClock
) -> None:
    attempts: list[int] = []

    async def stuck(step: Step) -> StepOutcome:
        attempts.append(step.attempt)
        if step.run_id == "quick" and step.attempt == 2:
            return Succeed(b"second time lucky")
        await trio.sleep(3600)
        return Succeed(b"never")

    async with opened(clock=clock, config=DEFAULT_LEASE, **VIRTUAL) as queue:
        runtime = Runtime(queue, stuck, step_time_limit=60)
        await runtime.submit(RunSpec(input=b"", run_id="stuck", max_attempts_per_step=2))
        with autojump(trio_time):
            await run_all(runtime)
        status = await runtime.status("stuck")
        assert status is not None and status.state is RunState.FAILED
        assert status.error == "step 0 exceeded its time limit of 60 s (attempt 2 of 2)"
        assert attempts == [1, 2]
        # A run's own limit overrides the runtime's; a retried attempt may succeed.
        await runtime.submit(
            RunSpec(input=b"", run_id="quick", max_attempts_per_step=2, step_time_limit=0.5)
        )
        with autojump(trio_time):
            await run_all(runtime)
        status = await runtime.status("quick")
        assert status is not None and status.state is RunState.SUCCEEDED
