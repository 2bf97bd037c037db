"""Application KV effects (issue #20): submit writes, staged step effects, terminal effects."""

from __future__ import annotations

import pytest
import trio

import taquba
from taquba import EnqueueRequest, KvValueTooLarge, LeaseHandle, MockClock, Store, UsageError
from taquba_workflow import (
    Cancel,
    ConflictingKvEffect,
    Continue,
    EffectsSealed,
    Fail,
    PermanentStepError,
    ReservedHeader,
    ReservedKvKey,
    RunOutcome,
    RunSpec,
    RunState,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    TerminalEffects,
    TerminalStatus,
)
from wf_support import opened, run_all

TOO_LARGE = b"x" * (taquba.MAX_KV_VALUE_SIZE + 1)


async def test_submit_kv_writes_commit_with_the_run_and_never_on_a_duplicate(store: Store) -> None:
    async def succeed(step: Step) -> StepOutcome:
        return Succeed(b"")

    async with opened(store) as queue:
        runtime = Runtime(queue, succeed)
        spec = RunSpec(input=b"in", run_id="r", kv_writes={b"app/a": b"1"})
        assert (await runtime.submit(spec)).newly_submitted
        assert await queue.kv_get(b"app/a") == b"1"  # durable before the step ran
        dup = RunSpec(input=b"in", run_id="r", kv_writes={b"app/a": b"2", b"app/b": b"x"})
        assert not (await runtime.submit(dup)).newly_submitted
        await run_all(runtime)
        assert not (await runtime.submit(dup)).newly_submitted  # ended, still remembered
        assert await queue.kv_get(b"app/a") == b"1"
        assert await queue.kv_get(b"app/b") is None


@pytest.mark.parametrize(
    ("writes", "error"),
    [
        ({b"workflow/workflow/runs/x": b""}, ReservedKvKey),
        ({b"app/big": TOO_LARGE}, KvValueTooLarge),
        ({"app/str": b""}, UsageError),
        ({b"app/str": "value"}, UsageError),
    ],
)
async def test_submit_kv_writes_are_checked_before_anything_is_written(
    clock: MockClock, writes: dict[bytes, bytes], error: type[Exception]
) -> None:
    async def succeed(step: Step) -> StepOutcome:  # pragma: no cover - never called
        return Succeed(b"")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, succeed)
        spec = RunSpec(input=b"", run_id="bad", kv_writes={b"app/ok": b"1", **writes})
        with pytest.raises(error):
            await runtime.submit(spec)
        assert await runtime.status("bad") is None
        assert await queue.kv_get(b"app/ok") is None


async def test_staged_effects_commit_with_the_step_outcome(store: Store) -> None:
    seen: list[tuple[int, bytes | None, bytes | None]] = []
    holder: dict[str, taquba.Queue] = {}

    async def runner(step: Step) -> StepOutcome:
        queue = holder["q"]
        seen.append((step.number, await queue.kv_get(b"app/s0"), await queue.kv_get(b"app/old")))
        if step.number == 0:
            step.kv_put(b"app/s0", b"first")
            step.kv_put(b"app/s0", b"zero")  # the last value staged wins
            assert await queue.kv_get(b"app/s0") is None  # staged, not written
            return Continue(b"")
        step.kv_delete(b"app/old")
        step.kv_delete(b"app/missing")  # deleting an absent key is harmless
        step.kv_put(b"app/s1", b"one")
        return Succeed(b"")

    async with opened(store) as queue:
        holder["q"] = queue
        await queue.kv_put(b"app/old", b"old")
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        await run_all(runtime)
        assert seen == [(0, None, b"old"), (1, b"zero", b"old")]  # step 0's with its Continue
        assert await queue.kv_get(b"app/s0") == b"zero"
        assert await queue.kv_get(b"app/s1") == b"one"
        assert await queue.kv_get(b"app/old") is None


@pytest.mark.parametrize(
    ("outcome", "state"),
    [(Fail("no"), RunState.FAILED), (Cancel("mine"), RunState.CANCELLED)],
)
async def test_fail_and_a_runner_cancel_commit_their_staged_effects(
    clock: MockClock, outcome: StepOutcome, state: RunState
) -> None:
    async def runner(step: Step) -> StepOutcome:
        step.kv_put(b"app/k", b"v")
        return outcome

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        await run_all(runtime)
        status = await runtime.status("r")
        assert status is not None and status.state is state
        assert await queue.kv_get(b"app/k") == b"v"


async def test_a_raising_attempt_commits_nothing_and_its_retry_commits_its_own(
    clock: MockClock,
) -> None:
    async def runner(step: Step) -> StepOutcome:
        step.kv_put(f"app/attempt-{step.attempt}".encode(), b"x")
        step.kv_delete(b"app/keep")
        if step.attempt == 1:
            raise RuntimeError("flaky")
        return Succeed(b"")

    async with opened(clock=clock) as queue:
        await queue.kv_put(b"app/keep", b"kept")
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="r", max_attempts_per_step=3))
        assert await queue.kv_get(b"app/keep") == b"kept"
        await run_all(runtime)
        assert await queue.kv_get(b"app/attempt-1") is None
        assert await queue.kv_get(b"app/attempt-2") == b"x"
        assert await queue.kv_get(b"app/keep") is None


async def test_a_step_that_fails_its_run_commits_nothing(clock: MockClock) -> None:
    async def runner(step: Step) -> StepOutcome:
        step.kv_put(b"app/k", b"v")
        raise PermanentStepError("broken")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        await run_all(runtime)
        status = await runtime.status("r")
        assert status is not None and status.state is RunState.FAILED
        assert await queue.kv_get(b"app/k") is None


async def test_an_external_cancel_drops_the_staged_effects(clock: MockClock) -> None:
    holder: dict[str, Runtime] = {}

    async def runner(step: Step) -> StepOutcome:
        step.kv_put(b"app/k", b"v")
        assert await holder["rt"].cancel(step.run_id)
        return Succeed(b"would have succeeded")

    async with opened(clock=clock) as queue:
        runtime = holder["rt"] = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        await run_all(runtime)
        status = await runtime.status("r")
        assert status is not None and status.state is RunState.CANCELLED
        assert await queue.kv_get(b"app/k") is None


async def test_an_external_cancel_while_the_step_runs_drops_its_effects() -> None:
    entered = trio.Event()

    async def runner(step: Step) -> StepOutcome:
        step.kv_put(b"app/k", b"v")
        entered.set()
        with trio.fail_after(10):
            await step.wait_cancel_requested()
        return Continue(b"")

    async with opened() as queue:
        runtime = Runtime(queue, runner, poll_interval=0.05)
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            await runtime.submit(RunSpec(input=b"", run_id="r"))
            await entered.wait()
            assert await runtime.cancel("r")
            with trio.fail_after(10):
                final = await runtime.wait_finished("r")
            runtime.shutdown()
        assert final is not None and final.state is RunState.CANCELLED
        assert await queue.kv_get(b"app/k") is None


async def test_staging_is_checked_at_once(clock: MockClock) -> None:
    errors: list[type[Exception]] = []
    kept: list[Step] = []

    async def runner(step: Step) -> StepOutcome:
        kept.append(step)
        step.kv_put(b"app/put", b"1")
        step.kv_delete(b"app/del")
        for stage in (
            lambda: step.kv_put(b"workflow/workflow/runs/r", b""),
            lambda: step.kv_delete(b"workflow/x"),
            lambda: step.kv_put(b"app/big", TOO_LARGE),
            lambda: step.kv_delete(b"app/put"),
            lambda: step.kv_put(b"app/del", b"2"),
            lambda: step.kv_put("app/str", b""),  # type: ignore[arg-type]
            lambda: step.kv_put(b"app/str", "v"),  # type: ignore[arg-type]
        ):
            try:
                stage()
            except Exception as exc:
                errors.append(type(exc))
        return Succeed(b"")

    async with opened(clock=clock) as queue:
        await queue.kv_put(b"app/del", b"old")
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        await run_all(runtime)
        assert errors == [
            ReservedKvKey,
            ReservedKvKey,
            KvValueTooLarge,
            ConflictingKvEffect,
            ConflictingKvEffect,
            UsageError,
            UsageError,
        ]
        # The refused stagings left nothing behind; the accepted ones committed.
        assert await queue.kv_get(b"app/put") == b"1"
        assert await queue.kv_get(b"app/del") is None
        assert await queue.kv_get(b"app/big") is None
        with pytest.raises(EffectsSealed):
            kept[0].kv_put(b"app/late", b"")  # the step returned: its effects were taken
        assert await queue.kv_get(b"app/late") is None


async def test_a_refused_staging_that_escapes_fails_the_attempt_and_writes_nothing(
    clock: MockClock,
) -> None:
    async def runner(step: Step) -> StepOutcome:
        step.kv_put(b"app/ok", b"1")
        step.kv_put(b"workflow/mine", b"")
        return Succeed(b"")  # pragma: no cover - never reached

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"", run_id="r", max_attempts_per_step=1))
        await run_all(runtime)
        status = await runtime.status("r")
        assert status is not None and status.state is RunState.FAILED
        assert "ReservedKvKey" in (status.error or "")
        assert await queue.kv_get(b"app/ok") is None
        assert await queue.kv_get(b"workflow/mine") is None


async def test_replay_applies_the_recorded_effects(memory_store: Store, clock: MockClock) -> None:
    calls: list[int] = []

    async def runner(step: Step) -> StepOutcome:
        calls.append(step.attempt)
        step.kv_put(f"app/attempt-{len(calls)}".encode(), b"x")
        return Succeed(b"")

    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, runner, step_output_replay=True)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        claim = await queue.claim("workflow")
        assert claim is not None
        assert await runtime.process(claim.job, LeaseHandle(queue, claim)) is not None
        # ... and the process died before its settlement: nothing was written.
    async with opened(memory_store, clock=clock) as queue:
        assert await queue.kv_get(b"app/attempt-1") is None
        runtime = Runtime(queue, runner, step_output_replay=True)
        await run_all(runtime)
        assert calls == [1]  # replayed, with the effects the runner staged
        assert await queue.kv_get(b"app/attempt-1") == b"x"


class EffectsHook:
    """Stages effects on every call; the first call fails after staging."""

    def __init__(self) -> None:
        self.calls = 0
        self.returned: list[TerminalEffects] = []

    async def on_termination(self, outcome: RunOutcome) -> TerminalEffects:
        self.calls += 1
        effects = TerminalEffects()
        effects.kv_put(f"app/hook-{self.calls}".encode(), outcome.status.value.encode())
        effects.kv_delete(b"app/pending")
        effects.enqueue(EnqueueRequest(queue_name="followups", payload=outcome.run_id.encode()))
        if self.calls == 1:
            raise RuntimeError("hook failed")
        self.returned.append(effects)
        return effects


async def test_terminal_effects_commit_once_with_the_notification(store: Store) -> None:
    async def succeed(step: Step) -> StepOutcome:
        return Succeed(b"")

    hook = EffectsHook()
    async with opened(store) as queue:
        await queue.kv_put(b"app/pending", b"1")
        runtime = Runtime(queue, succeed, hook)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        await run_all(runtime)
        await run_all(runtime)
        assert hook.calls == 2  # failed once, then delivered once
        assert await queue.kv_get(b"app/hook-1") is None
        assert await queue.kv_get(b"app/hook-2") == TerminalStatus.SUCCEEDED.value.encode()
        assert await queue.kv_get(b"app/pending") is None
        stats = await queue.stats("followups")
        assert stats.pending == 1
        claim = await queue.claim("followups")
        assert claim is not None and claim.job.payload == b"r"
        with pytest.raises(EffectsSealed):
            hook.returned[0].kv_put(b"app/late", b"")
        with pytest.raises(EffectsSealed):
            hook.returned[0].enqueue(EnqueueRequest(queue_name="followups", payload=b""))


def test_terminal_effects_are_checked_when_staged() -> None:
    effects = TerminalEffects()
    effects.kv_put(b"app/a", b"1")
    effects.kv_delete(b"app/b")
    with pytest.raises(ReservedKvKey):
        effects.kv_put(b"workflow/a", b"")
    with pytest.raises(KvValueTooLarge):
        effects.kv_put(b"app/c", TOO_LARGE)
    with pytest.raises(ConflictingKvEffect):
        effects.kv_delete(b"app/a")
    with pytest.raises(ConflictingKvEffect):
        effects.kv_put(b"app/b", b"")
    with pytest.raises(ReservedHeader):
        effects.enqueue(EnqueueRequest(queue_name="q", payload=b"", headers={"workflow.step": "0"}))
    with pytest.raises(UsageError):
        effects.enqueue(b"not a request")  # type: ignore[arg-type]
    effects.enqueue(EnqueueRequest(queue_name="q", payload=b"", headers={"kind": "mail"}))
    assert effects.kv_writes == {b"app/a": b"1"}
    assert list(effects.kv_deletes) == [b"app/b"]
    assert [r.queue_name for r in effects.enqueues] == ["q"]
    assert "1 puts" in repr(effects)
