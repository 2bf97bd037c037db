"""Step execution, transitions, failures and the terminal hook (reference §11.3, §16 21/22/25)."""

from __future__ import annotations

import pytest
import trio

import taquba
from taquba import JobStatus, LeaseHandle, MockClock, QueueConfig, Store
from taquba_workflow import (
    HEADER_RUN_ID,
    HEADER_TERMINAL,
    Cancel,
    Continue,
    Fail,
    PermanentStepError,
    RunOutcome,
    RunSpec,
    RunState,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    TerminalStatus,
    TransientStepError,
)
from wf_support import Hook, jobs_in, live_jobs, opened, run_all, run_steps


async def test_single_step_succeeds_and_fires_the_hook(clock: MockClock) -> None:
    hook = Hook()
    seen: list[Step] = []

    async def runner(step: Step) -> StepOutcome:
        seen.append(step)
        return Succeed(step.payload.upper())

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"hi", run_id="r1", headers={"tenant": "t1"}))
        assert await run_all(runtime) == 1
        [step] = seen
        assert (step.run_id, step.number, step.payload, step.attempt) == ("r1", 0, b"hi", 1)
        assert step.headers == {"tenant": "t1"}  # reserved workflow.* headers stripped
        assert step.memo.run_id == "r1" and step.memo.step == 0
        [outcome] = hook.outcomes
        assert outcome.status is TerminalStatus.SUCCEEDED
        assert outcome.result == b"HI"
        assert outcome.headers == {"tenant": "t1"}  # user headers thread through to the hook
        assert outcome.final_step == 0
        assert outcome.finished_at_ms == clock.now_ms()
        status = await runtime.status("r1")
        assert status is not None and status.state is RunState.SUCCEEDED
        assert await runtime.outcome("r1") == outcome
        assert (await live_jobs(queue))["done"] == 1


async def test_multi_step_run_advances_through_continue(clock: MockClock) -> None:
    hook = Hook()

    async def runner(step: Step) -> StepOutcome:
        if step.number < 3:
            return Continue(step.payload + str(step.number).encode())
        return Succeed(step.payload)

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        submitted = await runtime.submit(RunSpec(input=b">"))
        assert len(submitted.run_id) == 26  # a generated ULID
        status = await runtime.status(submitted.run_id)
        assert status is not None and (status.state, status.step) == (RunState.RUNNING, 0)
        assert await run_all(runtime) == 4
        [outcome] = hook.outcomes
        assert (outcome.result, outcome.final_step) == (b">012", 3)
        jobs = await live_jobs(queue)
        assert jobs["done"] == 4 and jobs["pending"] == jobs["scheduled"] == jobs["dead"] == 0


async def test_continue_after_schedules_the_next_step(clock: MockClock) -> None:
    ran: list[int] = []

    async def runner(step: Step) -> StepOutcome:
        ran.append(step.number)
        return Continue(b"later", delay=30) if step.number == 0 else Succeed(b"")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="sleepy"))
        decided_at = clock.now_ms()
        assert await run_all(runtime) == 1
        [scheduled] = await jobs_in(queue, JobStatus.SCHEDULED)
        assert scheduled.run_at == decided_at + 30_000
        assert scheduled.payload == b"later"
        clock.advance(29.9)
        await queue.promote_scheduled_now()
        assert await run_all(runtime) == 0
        clock.advance(0.1)
        await queue.promote_scheduled_now()
        assert await run_all(runtime) == 1
        assert ran == [0, 1]


async def test_restart_resumes_at_the_next_step(memory_store: Store, clock: MockClock) -> None:
    """A second runtime on the reopened store only ever sees step 1 (reference §11.3)."""
    first: list[int] = []
    second: list[int] = []

    def runner_into(log: list[int]):
        async def runner(step: Step) -> StepOutcome:
            log.append(step.number)
            return Continue(b"1") if step.number == 0 else Succeed(b"done")

        return runner

    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, runner_into(first))
        await runtime.submit(RunSpec(input=b"0", run_id="resume"))
        await run_all_once(runtime)
    hook = Hook()
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, runner_into(second), hook)
        assert await run_all(runtime) == 1
    assert first == [0]
    assert second == [1]
    assert hook.outcomes[0].final_step == 1


async def run_all_once(runtime: Runtime) -> None:
    from taquba.testing import drain

    assert await drain(runtime.queue, runtime.queue_name, runtime.process, max_jobs=1) == 1


async def test_runner_extends_its_lease(clock: MockClock) -> None:
    async def runner(step: Step) -> StepOutcome:
        before = step.lease.expires_at
        step.lease.ensure_at_least(600)
        assert before is not None and step.lease.expires_at is not None
        assert step.lease.expires_at >= clock.now_ms() + 600_000 > before
        return Succeed(b"")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="lease"))
        await run_all(runtime)
        status = await runtime.status("lease")
        assert status is not None and status.state is RunState.SUCCEEDED


@pytest.mark.parametrize(
    ("behaviour", "status", "error"),
    [
        ("fail", TerminalStatus.FAILED, "business said no"),
        ("cancel", TerminalStatus.CANCELLED, "runner gave up"),
        ("permanent", TerminalStatus.FAILED, "broken for good"),
        ("garbage", TerminalStatus.FAILED, "expected a StepOutcome"),
        ("str-payload", TerminalStatus.FAILED, "Continue.payload: expected bytes, got str"),
        ("int-error", TerminalStatus.FAILED, "an error of type int, expected str"),
    ],
)
async def test_terminal_outcomes_end_the_run_without_dead_letters(
    clock: MockClock, behaviour: str, status: TerminalStatus, error: str
) -> None:
    hook = Hook()
    calls = 0

    async def runner(step: Step) -> StepOutcome:
        nonlocal calls
        calls += 1
        if behaviour == "fail":
            return Fail("business said no")
        if behaviour == "cancel":
            return Cancel("runner gave up")
        if behaviour == "permanent":
            raise PermanentStepError("broken for good")
        if behaviour == "str-payload":
            return Continue("text")  # type: ignore[arg-type]
        if behaviour == "int-error":
            return Fail(3)  # type: ignore[arg-type]
        return "not an outcome"  # type: ignore[return-value]

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        await run_all(runtime)
        assert calls == 1  # never retried
        [outcome] = hook.outcomes
        assert outcome.status is status
        assert outcome.error is not None and error in outcome.error
        state = await runtime.status("r")
        assert state is not None and state.state.value == status.value
        assert error in (state.error or "")
        jobs = await live_jobs(queue)
        assert jobs["dead"] == 0 and jobs["done"] == 1


async def test_transient_errors_retry_then_fail_the_run_on_the_last_attempt(
    clock: MockClock,
) -> None:
    """Reference §16 item 25: an exhausted transient error ends the run (one hook call)."""
    hook = Hook()
    attempts: list[int] = []

    async def runner(step: Step) -> StepOutcome:
        attempts.append(step.attempt)
        assert step.max_attempts == 4
        if step.attempt % 2:
            raise TransientStepError(f"flaky {step.attempt}")
        raise ValueError(f"plain error {step.attempt}")  # any exception is transient

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="flaky", max_attempts_per_step=4))
        await run_all(runtime)
        assert attempts == [1, 2, 3, 4]
        [outcome] = hook.outcomes
        assert outcome.status is TerminalStatus.FAILED
        assert outcome.error == "ValueError: plain error 4"
        jobs = await live_jobs(queue)
        assert jobs["dead"] == 0 and jobs["done"] == 1
        assert await queue.kv_get(b"workflow/workflow/runs/flaky") is None


async def test_a_transient_error_with_a_single_attempt_fails_at_once(clock: MockClock) -> None:
    hook = Hook()

    async def runner(step: Step) -> StepOutcome:
        raise TransientStepError("once")

    async with opened(clock=clock, config=QueueConfig(max_attempts=1)) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="one"))
        await run_all(runtime)
        assert [o.error for o in hook.outcomes] == ["once"]


async def test_the_hook_fires_after_the_end_commits(clock: MockClock) -> None:
    hook = Hook()

    async def runner(step: Step) -> StepOutcome:
        return Succeed(b"ok")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        hook.runtime = runtime
        await runtime.submit(RunSpec(input=b"", run_id="early"))
        await run_steps(runtime)
        assert hook.outcomes == []  # the notification is a job of its own, not run yet
        [notification] = await jobs_in(queue, JobStatus.PENDING, runtime.hook_queue_name)
        assert notification.headers == {HEADER_RUN_ID: "early", HEADER_TERMINAL: "succeeded"}
        await run_all(runtime)
        [seen] = hook.seen_status
        assert seen.state is RunState.SUCCEEDED  # the end had committed


async def test_a_failing_hook_is_retried_as_its_own_job_without_rerunning_the_step(
    clock: MockClock,
) -> None:
    hook = Hook()
    hook.fail = 1
    calls = 0

    async def runner(step: Step) -> StepOutcome:
        nonlocal calls
        calls += 1
        return Succeed(b"ok")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="h"))
        await run_all(runtime)
        assert [o.result for o in hook.outcomes] == [b"ok", b"ok"]  # failed, then succeeded
        assert calls == 1  # the step ran once: only the notification was retried
        status = await runtime.status("h")
        assert status is not None and status.state is RunState.SUCCEEDED
        hooks = await live_jobs(queue, runtime.hook_queue_name)
        assert hooks["done"] == 1 and hooks["dead"] == 0


async def test_a_hook_that_keeps_failing_dead_letters_its_notification_not_the_run(
    clock: MockClock,
) -> None:
    hook = Hook()
    hook.fail = 10
    calls = 0

    async def runner(step: Step) -> StepOutcome:
        nonlocal calls
        calls += 1
        return Succeed(b"ok")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="h", max_attempts_per_step=2))
        await run_all(runtime)
        assert len(hook.outcomes) == 3  # the hook queue's max_attempts
        assert calls == 1
        status = await runtime.status("h")
        assert status is not None and status.state is RunState.SUCCEEDED
        [dead] = await jobs_in(queue, JobStatus.DEAD, runtime.hook_queue_name)
        assert dead.last_error == "RuntimeError: hook failed"
        assert (await live_jobs(queue))["dead"] == 0


async def test_a_permanent_hook_error_dead_letters_the_notification_at_once(
    clock: MockClock,
) -> None:
    async def hook(outcome: RunOutcome) -> None:
        raise PermanentStepError("unreachable endpoint")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, lambda step: _succeed(), hook)
        await runtime.submit(RunSpec(input=b"", run_id="p"))
        await run_all(runtime)
        [dead] = await jobs_in(queue, JobStatus.DEAD, runtime.hook_queue_name)
        assert dead.attempts == 1 and "unreachable endpoint" in (dead.last_error or "")


async def _succeed() -> StepOutcome:
    return Succeed(b"")


async def test_successor_exists_iff_the_settlement_committed(clock: MockClock) -> None:
    """Reference §16 item 21: the first settlement is lost, so exactly one successor exists."""
    ran: list[tuple[int, int]] = []
    hook = Hook()

    async def runner(step: Step) -> StepOutcome:
        ran.append((step.number, step.attempt))
        if step.number == 0 and step.attempt == 1:
            clock.advance(61)  # past the lease: the reaper requeues the job under our feet
            assert await queue.reap_now() == 1
            return Continue(b"from the lost delivery")
        if step.number == 0:
            return Continue(b"from the winning delivery")
        return Succeed(step.payload)

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="race"))
        await run_all(runtime)
        assert ran == [(0, 1), (0, 2), (1, 1)]
        [outcome] = hook.outcomes
        assert outcome.result == b"from the winning delivery"
        assert (await live_jobs(queue))["done"] == 2  # step 0 once, step 1 once


async def test_a_lost_delivery_never_notifies(clock: MockClock) -> None:
    hook = Hook()

    async def runner(step: Step) -> StepOutcome:
        if step.attempt == 1:
            clock.advance(61)
            await queue.reap_now()
            return Succeed(b"stale")
        return Succeed(b"fresh")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="stale"))
        await run_all(runtime)
        assert [o.result for o in hook.outcomes] == [b"fresh"]


async def test_steps_of_one_millisecond_are_claimed_in_order(clock: MockClock) -> None:
    """Reference §16 item 22: step ids come from the queue's monotonic ids."""
    order: list[tuple[str, int]] = []

    async def runner(step: Step) -> StepOutcome:
        order.append((step.run_id, step.number))
        return Continue(b"") if step.number == 0 else Succeed(b"")

    async with opened(clock=clock) as queue:  # the mock clock never moves: one millisecond
        runtime = Runtime(queue, runner)
        runs = [f"run-{i:02d}" for i in range(40)]
        for run_id in runs:
            await runtime.submit(RunSpec(input=b"", run_id=run_id))
        await run_all(runtime)
    assert order == [(r, 0) for r in runs] + [(r, 1) for r in runs]


async def test_a_step_job_that_is_not_the_runs_current_step_is_acked_unrun(
    clock: MockClock,
) -> None:
    calls = 0

    async def runner(step: Step) -> StepOutcome:
        nonlocal calls
        calls += 1
        return Succeed(b"")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await queue.enqueue(
            "workflow", b"", headers={"workflow.run_id": "ghost", "workflow.step": "3"}
        )
        await queue.enqueue("workflow", b"", headers={"workflow.run_id": "bad/id"})
        await run_all(runtime)
        assert calls == 0
        jobs = await live_jobs(queue)
        assert jobs["done"] == 1 and jobs["dead"] == 1  # malformed headers: dead-lettered


async def test_run_serves_until_shutdown_with_real_time() -> None:
    hook = Hook()
    done = trio.Event()

    async def runner(step: Step) -> StepOutcome:
        if step.number < 2:
            return Continue(step.payload)
        return Succeed(step.payload)

    async def on_end(outcome) -> None:  # a plain function works as a hook too
        hook.outcomes.append(outcome)
        done.set()

    async with opened() as queue:
        runtime = Runtime(queue, runner, on_end, concurrency=4, poll_interval=0.05)
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            await runtime.submit(RunSpec(input=b"p", run_id="live"))
            with trio.fail_after(10):
                final = await runtime.wait_finished("live")
                await done.wait()
            assert final is not None and final.state is RunState.SUCCEEDED
            assert runtime.statistics().steps_in_flight == 0
            runtime.shutdown()
        assert await runtime.wait_finished("live") == final
        assert await runtime.wait_finished("nobody") is None


async def test_process_can_drive_a_hand_made_claim(clock: MockClock) -> None:
    async def runner(step: Step) -> StepOutcome:
        return Continue(b"next")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="manual"))
        claim = await queue.claim("workflow")
        assert claim is not None
        effects = await runtime.process(claim.job, LeaseHandle(queue, claim))
        assert effects is not None and len(effects.enqueues) == 1
        assert effects.enqueues[0].headers["workflow.step"] == "1"
        assert await jobs_in(queue, JobStatus.PENDING) == []  # nothing until the ack commits
        await queue.ack_with(claim, effects)
        [pending] = await jobs_in(queue, JobStatus.PENDING)
        assert pending.id == effects.enqueues[0].job_id
        status = await runtime.status("manual")
        assert status is not None and status.step == 1


async def test_bytes_like_payloads_are_accepted(clock: MockClock) -> None:
    hook = Hook()

    async def runner(step: Step) -> StepOutcome:
        if step.number == 0:
            return Continue(bytearray(b"ba"))
        if step.number == 1:
            return Continue(memoryview(step.payload + b"-mv"), delay=0)
        return Succeed(bytearray(step.payload + b"!"))

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook, step_output_replay=True)
        await runtime.submit(RunSpec(input=bytearray(b"in"), run_id="bytes"))  # type: ignore[arg-type]
        await run_all(runtime)
        assert [o.result for o in hook.outcomes] == [b"ba-mv!"]


@pytest.mark.parametrize("path", ["permanent", "exhausted", "pending-cancel"])
async def test_every_non_ack_end_commits_marker_record_delete_and_one_notification(
    clock: MockClock, path: str
) -> None:
    """Reference §16 item 25, adapted: these ends are ordinary settlements here."""
    hook = Hook()

    async def runner(step: Step) -> StepOutcome:
        if path == "permanent":
            raise PermanentStepError("nope")
        raise TransientStepError("flaky")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook, memo_retention=3600)
        await runtime.submit(RunSpec(input=b"", run_id="end", max_attempts_per_step=2))
        if path == "pending-cancel":
            await runtime.cancel("end")
        await run_all(runtime)
        assert len(hook.outcomes) == 1
        assert [m.run_id for m in await runtime.memos.list_terminal_markers()] == ["end"]
        assert await queue.kv_get(b"workflow/workflow/runs/end") is None
        status = await runtime.status("end")
        assert status is not None and status.state.terminal
        jobs = await live_jobs(queue)
        assert jobs["pending"] == jobs["scheduled"] == jobs["claimed"] == jobs["dead"] == 0


async def test_a_run_on_every_store(store: Store) -> None:
    """Memory, local disk and S3 (moto): steps, memos, replay, an outcome blob, a sweep."""
    hook = Hook()
    clock = MockClock()

    async def runner(step: Step) -> StepOutcome:
        await step.memo.put("seen", step.payload)
        return Continue(step.payload + b"+") if step.number < 2 else Succeed(step.payload)

    async with opened(store, clock=clock) as queue:
        runtime = Runtime(queue, runner, hook, memo_retention=60, step_output_replay=True)
        await runtime.submit(RunSpec(input=b"s", run_id="everywhere"))
        assert await run_all(runtime) == 3
        assert hook.outcomes[0].result == b"s++"
        from taquba_workflow import read_run_outcome

        observed = await read_run_outcome(store, "everywhere")
        assert observed is not None and observed.result == b"s++"
        clock.advance(61)
        report = await runtime.sweep_now()
        assert (report.listed, report.runs_cleared, report.blobs_deleted) == (1, 1, 7)
        assert await store.list_blobs("workflow-memo") == []


async def test_run_ends_with_the_queues_fatal_error(file_store: Store) -> None:
    """Fenced by a second writer: `run` ends with `taquba.Fenced` (and the sweeper with it).

    `serve` re-raises what its `taquba.Worker` raises, as itself: not in an exception group.
    """
    import taquba

    async def runner(step: Step) -> StepOutcome:
        return Succeed(b"")

    async with opened(file_store) as queue:
        runtime = Runtime(queue, runner, memo_retention=60, poll_interval=0.05)
        async with opened(file_store):  # another writer opens the store: `queue` is fenced
            pass
        with pytest.raises(taquba.Fenced), trio.fail_after(30):
            await runtime.serve()


async def test_a_hook_failing_after_a_permanent_error_is_retried(clock: MockClock) -> None:
    """Failing the run now does not mean giving up on the hook: it still retries."""
    hook = Hook()
    hook.fail = 1

    async def runner(step: Step) -> StepOutcome:
        raise PermanentStepError("bad input")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="p", max_attempts_per_step=3))
        await run_all(runtime)
        assert [o.error for o in hook.outcomes] == ["bad input", "bad input"]
        status = await runtime.status("p")
        assert status is not None and status.state is RunState.FAILED


async def test_a_transient_error_can_ask_for_a_least_retry_delay(clock: MockClock) -> None:
    attempts: list[int] = []

    async def runner(step: Step) -> StepOutcome:
        attempts.append(step.attempt)
        if step.attempt == 1:
            raise TransientStepError("rate limited", retry_after=30)
        return Succeed(b"")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="later"))
        failed_at = clock.now_ms()
        await run_all(runtime)
        [retry] = await jobs_in(queue, JobStatus.SCHEDULED)
        assert retry.run_at == failed_at + 30_000
        assert retry.last_error == "rate limited"
        clock.advance(30)
        await queue.promote_scheduled_now()
        await run_all(runtime)
        assert attempts == [1, 2]
    with pytest.raises(taquba.UsageError, match="retry_after"):
        TransientStepError("x", retry_after=-1)


@pytest.mark.parametrize("runs", [1, 8])
async def test_run_delivers_the_notifications_of_runs_ending_during_the_drain(runs: int) -> None:
    # Every run's step is in flight when shutdown is set and ends only after it (during the
    # step loop's drain): `run` returns only once the hook has seen every one of those ends.
    hook = Hook()
    all_started = trio.Event()
    release = trio.Event()
    started = 0

    async def runner(step: Step) -> StepOutcome:
        nonlocal started
        started += 1
        if started == runs:
            all_started.set()
        await release.wait()
        return Succeed(step.payload)

    async with opened() as queue:
        runtime = Runtime(queue, runner, hook, concurrency=runs, poll_interval=0.05)
        with trio.fail_after(30):  # a hang guard only
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.serve)
                for i in range(runs):
                    await runtime.submit(RunSpec(input=b"x", run_id=f"drain-{i}"))
                await all_started.wait()
                runtime.shutdown()  # the step loop stops claiming and drains the steps in flight
                release.set()
            # `serve` has returned.
            assert sorted(o.run_id for o in hook.outcomes) == [f"drain-{i}" for i in range(runs)]
        stats = await queue.stats(runtime.hook_queue_name)
        assert (stats.pending, stats.claimed, stats.done) == (0, 0, runs)
