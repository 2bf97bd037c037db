"""Cancellation of pending, sleeping and running steps (reference §6.5, §11.3, §16 23/25)."""

from __future__ import annotations

import pytest
import trio

from taquba import JobStatus, LeaseHandle, MockClock, Store
from taquba_workflow import (
    Cancel,
    Continue,
    PermanentStepError,
    RunSpec,
    RunState,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    TerminalStatus,
    TransientStepError,
)
from wf_support import Hook, jobs_in, live_jobs, opened, run_all


class Runner:
    """Counts calls; the step body is set per test."""

    def __init__(self, body=None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.body = body

    async def run_step(self, step: Step) -> StepOutcome:
        self.calls.append((step.number, step.attempt))
        if self.body is not None:
            return await self.body(step)
        return Succeed(b"ran")


async def test_cancelling_a_pending_run_removes_its_step(clock: MockClock) -> None:
    hook, runner = Hook(), Runner()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook, memo_retention=60)
        await runtime.submit(RunSpec(input=b"", run_id="p", headers={"who": "me"}))
        assert await runtime.cancel("p") is True
        status = await runtime.status("p")
        assert status is not None and status.state is RunState.CANCELLING
        assert await jobs_in(queue, JobStatus.PENDING) != []  # the control job
        await run_all(runtime)
        assert runner.calls == []  # the worker never saw the step
        [outcome] = hook.outcomes
        assert (outcome.status, outcome.error, outcome.final_step) == (
            TerminalStatus.CANCELLED,
            None,
            0,
        )
        assert outcome.headers == {"who": "me"}
        status = await runtime.status("p")
        assert status is not None and status.state is RunState.CANCELLED
        # §16 item 25: marker, record delete and exactly one notification
        assert [m.run_id for m in await runtime.memos.list_terminal_markers()] == ["p"]
        assert await queue.kv_get(b"workflow/workflow/runs/p") is None
        assert await queue.kv_get(b"workflow/workflow/cancel/p") is None
        jobs = await live_jobs(queue)
        assert jobs["pending"] == jobs["scheduled"] == jobs["dead"] == jobs["claimed"] == 0


async def test_cancelling_a_sleeping_run_ends_it_without_waiting(clock: MockClock) -> None:
    hook = Hook()

    async def body(step: Step) -> StepOutcome:
        return Continue(b"tomorrow", delay=3600)

    runner = Runner(body)
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="sleep"))
        await run_all(runtime)
        assert len(await jobs_in(queue, JobStatus.SCHEDULED)) == 1
        assert await runtime.cancel("sleep")
        await run_all(runtime)  # no clock advance: the control job ends the run now
        assert runner.calls == [(0, 1)]
        assert [(o.status, o.final_step) for o in hook.outcomes] == [(TerminalStatus.CANCELLED, 1)]
        assert await jobs_in(queue, JobStatus.SCHEDULED) == []


async def test_cancel_during_a_running_step_overrides_its_outcome() -> None:
    hook = Hook()
    entered = trio.Event()

    async def body(step: Step) -> StepOutcome:
        entered.set()
        with trio.fail_after(10):
            await step.wait_cancel_requested()  # cooperative short-circuit
        assert step.cancel_requested
        return Succeed(b"would have succeeded")

    async with opened() as queue:
        runtime = Runtime(queue, Runner(body), hook, poll_interval=0.05)
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            await runtime.submit(RunSpec(input=b"", run_id="running"))
            await entered.wait()
            assert await runtime.cancel("running")
            with trio.fail_after(10):
                final = await runtime.wait_finished("running")
                await hook.wait_calls()
            nursery.cancel_scope.cancel()
    assert final is not None and final.state is RunState.CANCELLED
    assert [(o.status, o.result) for o in hook.outcomes] == [(TerminalStatus.CANCELLED, None)]


@pytest.mark.parametrize("error", [PermanentStepError("p"), TransientStepError("t")])
async def test_cancel_suppresses_runner_errors(clock: MockClock, error: Exception) -> None:
    hook = Hook()
    holder: dict[str, Runtime] = {}

    async def body(step: Step) -> StepOutcome:
        await holder["rt"].cancel(step.run_id)
        raise error

    runner = Runner(body)
    async with opened(clock=clock) as queue:
        runtime = holder["rt"] = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="e", max_attempts_per_step=3))
        await run_all(runtime)
        assert runner.calls == [(0, 1)]  # not retried
        assert [(o.status, o.error) for o in hook.outcomes] == [(TerminalStatus.CANCELLED, None)]


async def test_a_runner_cancel_reason_wins_over_an_external_cancel(clock: MockClock) -> None:
    hook = Hook()
    holder: dict[str, Runtime] = {}

    async def body(step: Step) -> StepOutcome:
        await holder["rt"].cancel(step.run_id)
        return Cancel("my own reason")

    async with opened(clock=clock) as queue:
        runtime = holder["rt"] = Runtime(queue, Runner(body), hook)
        await runtime.submit(RunSpec(input=b"", run_id="own"))
        await run_all(runtime)
        assert [o.error for o in hook.outcomes] == ["my own reason"]


async def test_double_cancel_fires_the_hook_once(clock: MockClock) -> None:
    hook = Hook()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, Runner(), hook)
        await runtime.submit(RunSpec(input=b"", run_id="twice"))
        assert await runtime.cancel("twice")
        assert await runtime.cancel("twice")  # still active: already requested
        await run_all(runtime)
        assert await runtime.cancel("twice") is False  # ended
        await run_all(runtime)
        assert len(hook.outcomes) == 1
        assert await runtime.cancel("unknown") is False


async def test_cancel_after_the_run_ended_returns_false(clock: MockClock) -> None:
    hook = Hook()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, Runner(), hook)
        await runtime.submit(RunSpec(input=b"", run_id="done"))
        await run_all(runtime)
        assert await runtime.cancel("done") is False
        assert [o.status for o in hook.outcomes] == [TerminalStatus.SUCCEEDED]


async def test_a_cancellation_survives_a_restart(memory_store: Store, clock: MockClock) -> None:
    """Reference §16 item 23: a cancel of a claimed step, then a new process, ends cancelled."""
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, Runner())
        await runtime.submit(RunSpec(input=b"", run_id="persist"))
        claim = await queue.claim("workflow")  # a worker took step 0 ... and the process dies
        assert claim is not None
        assert await runtime.cancel("persist")
    hook, runner = Hook(), Runner()
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await run_all(runtime)
        assert runner.calls == []  # the Succeed it would have returned is never produced
        assert [o.status for o in hook.outcomes] == [TerminalStatus.CANCELLED]


async def test_a_cancel_racing_a_transition_still_ends_the_run(clock: MockClock) -> None:
    """The step decided Continue before the cancel landed; the next step never runs."""
    hook = Hook()

    async def body(step: Step) -> StepOutcome:
        return Continue(b"next")

    runner = Runner(body)
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"", run_id="race"))
        claim = await queue.claim("workflow")
        assert claim is not None
        effects = await runtime.process(claim.job, LeaseHandle(queue, claim))  # no cancel yet
        assert await runtime.cancel("race")  # fires the (already decided) step's signal
        await queue.ack_with(claim, effects)  # the transition commits step 1
        await run_all(runtime)
        assert runner.calls == [(0, 1)]
        assert [(o.status, o.final_step) for o in hook.outcomes] == [(TerminalStatus.CANCELLED, 1)]
        jobs = await live_jobs(queue)
        assert jobs["pending"] == jobs["scheduled"] == jobs["claimed"] == jobs["dead"] == 0


async def test_status_reports_cancelling_while_the_step_runs(clock: MockClock) -> None:
    seen: list[RunState] = []
    holder: dict[str, Runtime] = {}

    async def body(step: Step) -> StepOutcome:
        await holder["rt"].cancel(step.run_id)
        status = await holder["rt"].status(step.run_id)
        assert status is not None
        seen.append(status.state)
        return Succeed(b"")

    async with opened(clock=clock) as queue:
        runtime = holder["rt"] = Runtime(queue, Runner(body))
        await runtime.submit(RunSpec(input=b"", run_id="s"))
        await run_all(runtime)
        assert seen == [RunState.CANCELLING]
        status = await runtime.status("s")
        assert status is not None and status.state is RunState.CANCELLED


async def test_cancelling_a_run_whose_step_died_ends_it(clock: MockClock) -> None:
    """A step dead-lettered outside the runtime (lease expired on its last attempt)."""
    hook = Hook()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, Runner(), hook)
        await runtime.submit(RunSpec(input=b"", run_id="orphan", max_attempts_per_step=1))
        claim = await queue.claim("workflow")
        assert claim is not None
        clock.advance(61)
        await queue.reap_now()  # out of attempts: dead-lettered, the run is stranded
        assert len(await jobs_in(queue, JobStatus.DEAD)) == 1
        assert await runtime.cancel("orphan")  # before the runtime noticed the dead step
        await run_all(runtime)
        assert [o.status for o in hook.outcomes] == [TerminalStatus.CANCELLED]


async def test_a_stale_cancel_request_does_not_touch_a_new_run(clock: MockClock) -> None:
    hook = Hook()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, Runner(), hook)
        await runtime.submit(RunSpec(input=b"1", run_id="reuse"))
        assert await runtime.cancel("reuse")
        await run_all(runtime)  # first run cancelled
        assert await runtime.retry("reuse")  # a new incarnation of the run
        # an old request left over (as if written just as the first run ended)
        from taquba_workflow import _records as records

        await queue.kv_put(b"workflow/workflow/cancel/reuse", records.encode_cancel("old", 1))
        status = await runtime.status("reuse")
        assert status is not None and status.state is RunState.RUNNING
        await run_all(runtime)
        assert [o.status for o in hook.outcomes] == [
            TerminalStatus.CANCELLED,
            TerminalStatus.SUCCEEDED,
        ]
        # cancelling clears such a leftover before writing its own request
        await runtime.submit(RunSpec(input=b"3", run_id="reuse-2"))
        await queue.kv_put(b"workflow/workflow/cancel/reuse-2", records.encode_cancel("old", 1))
        assert await runtime.cancel("reuse-2")
        await run_all(runtime)
        assert hook.outcomes[-1].status is TerminalStatus.CANCELLED


async def test_a_queue_level_cancel_of_a_claimed_step_survives_a_restart(
    memory_store: Store, clock: MockClock
) -> None:
    """Only the claim's persisted cancel flag is left (no runtime request): still cancelled."""
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, Runner())
        await runtime.submit(RunSpec(input=b"", run_id="flag"))
        claim = await queue.claim("workflow")
        assert claim is not None
        assert (await queue.cancel(claim.id)).value == "requested"
    hook, runner = Hook(), Runner()
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await run_all(runtime)
        assert runner.calls == []
        assert [o.status for o in hook.outcomes] == [TerminalStatus.CANCELLED]


async def test_a_control_job_outliving_its_run_only_clears_its_request(clock: MockClock) -> None:
    """A cancel that committed just as the run ended: no second end, no leftover request."""
    from taquba_workflow import _records as records

    hook = Hook()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, Runner(), hook)
        await runtime.submit(RunSpec(input=b"", run_id="late"))
        record_raw = await queue.kv_get(b"workflow/workflow/runs/late")
        assert record_raw is not None
        incarnation = records.decode_run(record_raw).incarnation
        await run_all(runtime)  # the run succeeds first
        request = records.encode_cancel(incarnation, 1)
        await queue.enqueue(
            "workflow",
            request,
            headers={"workflow.run_id": "late", "workflow.control": "cancel"},
            kv_writes={b"workflow/workflow/cancel/late": request},
        )
        await queue.enqueue(
            "workflow", b"junk", headers={"workflow.run_id": "late", "workflow.control": "cancel"}
        )
        await queue.enqueue("workflow", b"", headers={"workflow.control": "reboot"})
        await run_all(runtime)
        assert [o.status for o in hook.outcomes] == [TerminalStatus.SUCCEEDED]
        assert await queue.kv_get(b"workflow/workflow/cancel/late") is None
        jobs = await live_jobs(queue)
        assert jobs["dead"] == 2  # the malformed control jobs
