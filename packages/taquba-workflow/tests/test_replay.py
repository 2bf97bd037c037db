"""Step-output replay (reference §6.8, §11.3): a redelivery replays the stored outcome."""

from __future__ import annotations

import pytest

from taquba import JobStatus, LeaseHandle, MockClock, Store
from taquba_workflow import (
    Continue,
    Fail,
    RunSpec,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    TerminalStatus,
    TransientStepError,
)
from taquba_workflow import _keys as keys
from wf_support import Hook, jobs_in, live_jobs, opened, run_all


class Counting:
    def __init__(self, outcome: StepOutcome) -> None:
        self.outcome = outcome
        self.calls: list[tuple[int, int]] = []

    async def run_step(self, step: Step) -> StepOutcome:
        self.calls.append((step.number, step.attempt))
        if step.number == 0:
            return self.outcome
        return Succeed(step.payload)


async def crash_before_ack(memory_store: Store, clock: MockClock, runner: Counting) -> None:
    """Process step 0 of run ``r`` and drop the settlement, as a process dying before its ack."""
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, runner, step_output_replay=True)
        await runtime.submit(RunSpec(input=b"in", run_id="r"))
        claim = await queue.claim("workflow")
        assert claim is not None
        effects = await runtime.process(claim.job, LeaseHandle(queue, claim))
        assert effects is not None  # computed, but never committed


async def test_replay_skips_the_runner_after_a_crash_before_ack(
    memory_store: Store, clock: MockClock
) -> None:
    first = Counting(Continue(b"decided once"))
    await crash_before_ack(memory_store, clock, first)
    second = Counting(Continue(b"decided differently"))
    hook = Hook()
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, second, hook, step_output_replay=True)
        await run_all(runtime)
        assert first.calls == [(0, 1)]
        assert second.calls == [(1, 1)]  # step 0 was replayed, step 1 ran exactly once
        assert hook.outcomes[0].result == b"decided once"
        assert (await live_jobs(queue))["done"] == 2


async def test_replay_of_a_terminal_outcome_skips_the_runner(
    memory_store: Store, clock: MockClock
) -> None:
    await crash_before_ack(memory_store, clock, Counting(Fail("decided")))
    second = Counting(Succeed(b"nope"))
    hook = Hook()
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, second, hook, step_output_replay=True)
        await run_all(runtime)
    assert second.calls == []
    assert [(o.status, o.error) for o in hook.outcomes] == [(TerminalStatus.FAILED, "decided")]


async def test_a_replayed_continue_after_keeps_the_original_schedule(
    memory_store: Store, clock: MockClock
) -> None:
    decided_at = clock.now_ms()
    await crash_before_ack(memory_store, clock, Counting(Continue(b"later", delay=10)))
    clock.advance(4)  # the restart took 4 s
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, Counting(Succeed(b"")), step_output_replay=True)
        await run_all(runtime)
        [scheduled] = await jobs_in(queue, JobStatus.SCHEDULED)
        assert scheduled.run_at == decided_at + 10_000  # 6 s left, not 10


async def test_a_corrupt_replay_record_falls_back_to_the_runner(
    memory_store: Store, clock: MockClock
) -> None:
    await crash_before_ack(memory_store, clock, Counting(Continue(b"x")))
    [name] = await memory_store.list_blobs("workflow-memo/step-outputs/r/0")
    await memory_store.put_blob(f"workflow-memo/step-outputs/r/0/{name}", b"\xc1garbage")
    second = Counting(Continue(b"recomputed"))
    hook = Hook()
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, second, hook, step_output_replay=True)
        await run_all(runtime)
    assert second.calls == [(0, 2), (1, 1)]
    assert hook.outcomes[0].result == b"recomputed"


async def test_replay_is_keyed_by_the_step_payload(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, Counting(Succeed(b"")), step_output_replay=True)
        await runtime.submit(RunSpec(input=b"payload-a", run_id="r"))
        await run_all(runtime)
        path = keys.step_output_path("workflow-memo", "r", 0, b"payload-a")
        assert await queue.store.get_blob(path) is not None
        other = keys.step_output_path("workflow-memo", "r", 0, b"payload-b")
        assert await queue.store.get_blob(other) is None


async def test_errors_are_never_recorded(clock: MockClock) -> None:
    attempts: list[int] = []

    async def runner(step: Step) -> StepOutcome:
        attempts.append(step.attempt)
        if step.attempt < 3:
            raise TransientStepError("again")
        return Succeed(b"third time")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, step_output_replay=True)
        await runtime.submit(RunSpec(input=b"", run_id="err"))
        await run_all(runtime)
    assert attempts == [1, 2, 3]  # every retry invoked the runner


@pytest.mark.parametrize("replay", [False, True])
async def test_replay_off_records_nothing(clock: MockClock, replay: bool) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, Counting(Succeed(b"")), step_output_replay=replay)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        await run_all(runtime)
        names = await queue.store.list_blobs("workflow-memo/step-outputs")
        assert len(names) == (1 if replay else 0)
