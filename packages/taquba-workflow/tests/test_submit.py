"""Submission: run ids, idempotency, input mismatch, restarts and concurrency (§16 18-20, 24)."""

from __future__ import annotations

import pytest
import trio

import taquba
from taquba import InvalidQueueName, MockClock, Store
from taquba.testing import Fault, inject_faults, open_test_queue
from taquba_workflow import (
    Fail,
    InputMismatch,
    InvalidRunId,
    ReservedHeader,
    RunHandle,
    RunSpec,
    RunState,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
)
from wf_support import Hook, opened, run_all


async def succeed(step: Step) -> StepOutcome:
    return Succeed(step.payload)


async def test_resubmitting_an_active_run_is_idempotent_or_a_mismatch(clock: MockClock) -> None:
    """Reference §16 item 19: a new input for an active run id is `InputMismatch`."""
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, succeed)
        spec = RunSpec(input=b"same", run_id="dup")
        first = await runtime.submit(spec)
        assert (first.run_id, first.newly_submitted) == ("dup", True)
        again = await runtime.submit(spec)
        assert (again.run_id, again.newly_submitted) == ("dup", False)
        with pytest.raises(InputMismatch) as info:
            await runtime.submit(RunSpec(input=b"other", run_id="dup"))
        assert info.value.run_id == "dup"
        assert runtime.statistics().submit_locks == 0  # per-run lock entries are released
        assert await run_all(runtime) == 1  # one step 0, not two


async def test_duplicates_are_recognised_across_a_restart(file_store: Store) -> None:
    """Reference §16 item 18: the durable run record survives the process."""
    async with opened(file_store) as queue:
        await Runtime(queue, succeed).submit(RunSpec(input=b"in", run_id="durable"))
    async with opened(file_store) as queue:
        runtime = Runtime(queue, succeed)
        again = await runtime.submit(RunSpec(input=b"in", run_id="durable"))
        assert again.newly_submitted is False
        with pytest.raises(InputMismatch):
            await runtime.submit(RunSpec(input=b"changed", run_id="durable"))
        assert await run_all(runtime) == 1


async def test_resubmitting_an_ended_run_returns_it_and_runs_nothing(clock: MockClock) -> None:
    seen: list[bytes] = []

    async def runner(step: Step) -> StepOutcome:
        seen.append(step.payload)
        return Fail("no") if step.payload == b"fail" else Succeed(b"")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, step_output_replay=True)
        for payload, state in ((b"ok", RunState.SUCCEEDED), (b"fail", RunState.FAILED)):
            run_id = payload.decode()
            await runtime.submit(RunSpec(input=payload, run_id=run_id))
            await run_all(runtime)
            again = await runtime.submit(RunSpec(input=payload, run_id=run_id))
            assert (again.run_id, again.newly_submitted) == (run_id, False)
            assert await run_all(runtime) == 0
            status = await runtime.status(run_id)
            assert status is not None and status.state is state
            with pytest.raises(InputMismatch):
                await runtime.submit(RunSpec(input=b"other", run_id=run_id))
    assert seen == [b"ok", b"fail"]  # each ran once


@pytest.mark.parametrize("run_id", ["", "../memos", "a/b", ".", "x" * 129, "tab\t"])
async def test_invalid_run_ids_never_reach_the_store(clock: MockClock, run_id: str) -> None:
    """Reference §16 item 24: an empty id would alias the memo prefix itself."""
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, succeed)
        with pytest.raises(InvalidRunId):
            await runtime.submit(RunSpec(input=b"", run_id=run_id))
        with pytest.raises(InvalidRunId):
            await runtime.status(run_id)
        with pytest.raises(InvalidRunId):
            await runtime.cancel(run_id)
        with pytest.raises(InvalidRunId):
            runtime.memos.memo(run_id, 0)
        assert (await queue.stats("workflow")).pending == 0


async def test_reserved_headers_and_bad_specs_are_rejected(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, succeed)
        with pytest.raises(ReservedHeader):
            await runtime.submit(RunSpec(input=b"", headers={"workflow.step": "7"}))
        with pytest.raises(taquba.TypeMismatch):  # the runtime's payload type is bytes
            await runtime.submit(RunSpec(input="text"))  # type: ignore[arg-type]
        with pytest.raises(taquba.UsageError):
            await runtime.submit(b"")  # type: ignore[arg-type]
        with pytest.raises(taquba.UsageError):
            Runtime(queue, succeed, concurrency=0)
        with pytest.raises(taquba.UsageError):
            Runtime(queue, succeed, memo_retention=0)
        with pytest.raises(taquba.UsageError):
            Runtime(queue, object())  # type: ignore[arg-type]
        with pytest.raises(taquba.UsageError):
            Runtime(queue, succeed, object())  # type: ignore[arg-type]
        with pytest.raises(InvalidQueueName):
            Runtime(queue, succeed, queue_name="")


async def test_runtimes_on_different_queue_names_do_not_share_run_ids(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        a = Runtime(queue, succeed, queue_name="a", memo_prefix="memo-a")
        b = Runtime(queue, succeed, queue_name="b", memo_prefix="memo-b")
        assert (await a.submit(RunSpec(input=b"1", run_id="same"))).newly_submitted
        assert (await b.submit(RunSpec(input=b"2", run_id="same"))).newly_submitted
        assert await run_all(a) == 1 and await run_all(b) == 1


async def test_concurrent_same_id_submissions_create_one_run(clock: MockClock) -> None:
    results: list[RunHandle[bytes]] = []
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, succeed)

        async def submit() -> None:
            results.append(await runtime.submit(RunSpec(input=b"x", run_id="one")))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(submit)
        assert sum(r.newly_submitted for r in results) == 1
        assert runtime.statistics().submit_locks == 0
        assert (await queue.stats("workflow")).pending == 1


FLUSH = 0.1
RUNS = 200


async def test_distinct_submissions_proceed_in_parallel() -> None:
    """Reference §16 item 20: no process-wide lock; submissions share WAL group commits.

    Each submission is one durable commit when alone: serialised, 200 submissions are 200
    durable commits, one flush each. In parallel they ride shared group commits (measured: a
    handful). Counted (a no-op fault on every durable write), not timed, so a loaded machine
    cannot fail it; the bound is generous so that only serialisation fails it.
    """
    async with open_test_queue(flush_interval=FLUSH) as queue:
        runtime = Runtime(queue, succeed)
        outcomes: list[RunHandle[bytes]] = []

        async def submit(i: int) -> None:
            outcomes.append(await runtime.submit(RunSpec(input=b"x", run_id=f"run-{i}")))

        with inject_faults() as faults:
            faults.on_write(Fault.slow(0), times=None, durable=True)  # counts, changes nothing
            async with trio.open_nursery() as nursery:
                for i in range(RUNS):
                    nursery.start_soon(submit, i)
        commits = sum(f.site == "commit" for f in faults.injected)
        assert len(outcomes) == RUNS and all(o.newly_submitted for o in outcomes)
        assert (await queue.stats("workflow")).pending == RUNS
        print(f"{RUNS} concurrent submits: {commits} durable commits")
        assert commits <= RUNS // 4, f"{RUNS} submissions took {commits} commits: serialised?"


async def test_hook_sees_user_headers(clock: MockClock) -> None:
    hook = Hook()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, succeed, hook)
        await runtime.submit(RunSpec(input=b"", run_id="h", headers={"a": "1", "b": "2"}))
        await run_all(runtime)
        assert hook.outcomes[0].headers == {"a": "1", "b": "2"}


async def test_priority_and_attempts_apply_to_every_step(clock: MockClock) -> None:
    from taquba_workflow import Continue

    async def runner(step: Step) -> StepOutcome:
        assert step.max_attempts == 7
        return Continue(b"") if step.number < 2 else Succeed(b"")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="p", priority=5, max_attempts_per_step=7))
        claim = await queue.claim("workflow")
        assert claim is not None and claim.job.priority == 5 and claim.job.max_attempts == 7
        await queue.nack(claim, "put back", retry_after=0)
        assert await run_all(runtime) == 3
