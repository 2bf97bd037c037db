"""Durable signals: ``Continue(on_signal=...)``, `Runtime.signal`, `Runtime.clear_signal`.

The races the reference tests: a signal arriving during registration, a timeout racing a
wake, a process dying between the buffer write and the wake (and between the wake and the
clean-up).
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import taquba
from taquba import JobStatus, MockClock, Store, WakeOutcome
from taquba.testing import drain, open_child
from taquba_workflow import (
    Continue,
    RunSpec,
    RunState,
    Runtime,
    SignalOutcome,
    Step,
    StepOutcome,
    Succeed,
    TerminalStatus,
    TransientStepError,
)
from taquba_workflow import _keys as keys  # pyright: ignore[reportPrivateUsage]
from taquba_workflow import _records as records  # pyright: ignore[reportPrivateUsage]
from taquba_workflow import _runtime as runtime_module  # pyright: ignore[reportPrivateUsage]
from wf_support import Hook, jobs_in, opened, run_all

KEY = "approval:42"
WAIT = keys.signal_wait_key("workflow", KEY)
BUFFER = keys.signal_buffer_key("workflow", KEY)


class Waiting:
    """Step 0 waits on ``key`` for ``timeout`` s; step 1 records what it read and succeeds."""

    def __init__(self, key: str = KEY, timeout: float = 60.0) -> None:
        self.key = key
        self.timeout = timeout
        self.seen: list[tuple[int, str | None, bytes | None, int]] = []
        self.fail_first = False

    async def run_step(self, step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        self.seen.append((step.number, step.signal_key, step.signal, step.attempt))
        if step.number == 0:
            return Continue(step.payload, on_signal=self.key, timeout=self.timeout)
        if self.fail_first and step.attempt == 1:
            raise TransientStepError("try again")
        return Succeed(step.signal if step.signal is not None else b"<timed out>")


def step1(runner: Waiting) -> list[tuple[int, str | None, bytes | None, int]]:
    return [seen for seen in runner.seen if seen[0] == 1]


async def result(runtime: Runtime[Any, Any], run_id: str) -> bytes | None:
    outcome = await runtime.outcome(run_id)
    assert outcome is not None and outcome.status is TerminalStatus.SUCCEEDED, outcome
    return outcome.result


async def test_signal_wakes_a_waiting_run_with_its_payload(clock: MockClock) -> None:
    runner = Waiting()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        decided_at = clock.now_ms()
        assert await run_all(runtime) == 1
        [waiting] = await jobs_in(queue, JobStatus.SCHEDULED)  # occupies no worker
        assert waiting.run_at == decided_at + 60_000
        assert records.decode_waiter(await queue.kv_get(WAIT) or b"").job_id == waiting.id
        assert await runtime.signal(KEY, b"yes") is SignalOutcome.DELIVERED
        assert await run_all(runtime) == 1  # due now, long before the deadline
        assert step1(runner) == [(1, KEY, b"yes", 1)]
        assert await result(runtime, "r1") == b"yes"
        assert await queue.kv_get(WAIT) is None
        assert await queue.kv_get(BUFFER) is None
        assert (await queue.kv_scan(b"workflow/workflow/signal")).entries == []


async def test_a_signal_before_the_wait_is_buffered_and_taken_at_registration(
    clock: MockClock,
) -> None:
    runner = Waiting()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        assert await runtime.signal(KEY, b"early") is SignalOutcome.BUFFERED
        assert await runtime.signal(KEY, b"later") is SignalOutcome.BUFFERED  # replaces
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        assert await run_all(runtime) == 2  # no wait: step 1 was enqueued pending
        assert await jobs_in(queue, JobStatus.SCHEDULED) == []
        assert step1(runner) == [(1, KEY, b"later", 1)]
        assert (await queue.kv_scan(b"workflow/workflow/signal")).entries == []


async def test_the_timeout_continues_without_a_signal(clock: MockClock) -> None:
    runner = Waiting(timeout=30)
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)
        clock.advance(29.9)
        await queue.promote_scheduled_now()
        assert await run_all(runtime) == 0
        clock.advance(0.1)
        await queue.promote_scheduled_now()
        assert await run_all(runtime) == 1
        assert step1(runner) == [(1, KEY, None, 1)]
        assert await result(runtime, "r1") == b"<timed out>"
        assert await queue.kv_get(WAIT) is None
        # The waiter is gone: a signal now is buffered for the next wait.
        assert await runtime.signal(KEY, b"late") is SignalOutcome.BUFFERED


async def test_a_second_live_waiter_fails_its_run_clearly(clock: MockClock) -> None:
    runner = Waiting()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="first"))
        await run_all(runtime)
        await runtime.submit(RunSpec(input=b"x", run_id="second"))
        await run_all(runtime)
        outcome = await runtime.outcome("second")
        assert outcome is not None and outcome.status is TerminalStatus.FAILED
        assert outcome.error is not None
        assert "run first is already waiting for a signal on key 'approval:42'" in outcome.error
        status = await runtime.status("first")
        assert status is not None and status.state is RunState.RUNNING
        assert await runtime.signal(KEY, b"ok") is SignalOutcome.DELIVERED
        await run_all(runtime)
        assert await result(runtime, "first") == b"ok"


async def test_two_runs_registering_on_one_key_at_once_leave_one_waiter(
    clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both registrations read "no waiter" before either commits: the waiter entry is
    written under a ``kv_expect`` of what was read, so the second settlement conflicts,
    its step runs again, finds the first run waiting and fails its run clearly."""
    runner = Waiting()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        real_get = queue.kv_get
        readers: list[bytes | None] = []
        both_read = trio.Event()

        async def kv_get(key: bytes) -> bytes | None:
            value = await real_get(key)
            if key == WAIT and not both_read.is_set():
                readers.append(value)
                if len(readers) == 2:
                    both_read.set()
                with trio.fail_after(10):  # a hang bound: both registrations must get here
                    await both_read.wait()
            return value

        monkeypatch.setattr(queue, "kv_get", kv_get)
        await runtime.submit(RunSpec(input=b"x", run_id="first"))
        await runtime.submit(RunSpec(input=b"x", run_id="second"))
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(partial(drain, max_jobs=1), queue, "workflow", runtime.process)
        assert readers == [None, None]
        await run_all(runtime)
        outcomes = {run: await runtime.outcome(run) for run in ("first", "second")}
        failed = [run for run, outcome in outcomes.items() if outcome is not None]
        assert len(failed) == 1, outcomes
        [loser] = failed
        [winner] = {"first", "second"} - {loser}
        lost = outcomes[loser]
        assert lost is not None and lost.status is TerminalStatus.FAILED
        assert f"run {winner} is already waiting for a signal on key {KEY!r}" in (lost.error or "")
        waiter = records.decode_waiter(await real_get(WAIT) or b"")
        assert waiter.run_id == winner
        assert await runtime.signal(KEY, b"ok") is SignalOutcome.DELIVERED
        await run_all(runtime)
        assert await result(runtime, winner) == b"ok"


async def test_a_run_may_wait_on_the_same_key_again(clock: MockClock) -> None:
    seen: list[bytes | None] = []

    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        seen.append(step.signal)
        if step.number < 2:
            return Continue(b"", on_signal=KEY, timeout=60)
        return Succeed(b"")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)
        assert await runtime.signal(KEY, b"one") is SignalOutcome.DELIVERED
        await run_all(runtime)
        assert await runtime.signal(KEY, b"two") is SignalOutcome.DELIVERED
        await run_all(runtime)
        assert seen == [None, b"one", b"two"]


async def test_a_signal_during_registration_is_delivered(
    clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registration read the empty buffer; the signal lands before the wait commits."""
    runner = Waiting()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        outcomes: list[SignalOutcome] = []
        real_get = queue.kv_get
        buffered = trio.Event()

        async def kv_get(key: bytes) -> bytes | None:
            value = await real_get(key)
            if key == BUFFER and not outcomes and nursery_ref:
                nursery_ref[0].start_soon(signal)
                await buffered.wait()  # the signal's buffer write is durable now
            return value

        async def signal() -> None:
            outcomes.append(await runtime.signal(KEY, b"racing"))

        async def put_then_note(key: bytes, value: bytes) -> None:
            await real_put(key, value)
            if key == BUFFER:
                buffered.set()

        real_put = queue.kv_put
        nursery_ref: list[trio.Nursery] = []
        monkeypatch.setattr(queue, "kv_get", kv_get)
        monkeypatch.setattr(queue, "kv_put", put_then_note)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        async with trio.open_nursery() as nursery:
            nursery_ref.append(nursery)
            await run_all(runtime)  # registers; the signal task polls until the wait commits
        assert outcomes == [SignalOutcome.DELIVERED]
        await run_all(runtime)
        assert step1(runner) == [(1, KEY, b"racing", 1)]


async def test_a_signal_that_missed_the_registration_is_taken_at_the_deadline(
    clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but the signal gives up polling before the wait commits: never lost."""
    monkeypatch.setattr(runtime_module, "_SIGNAL_POLLS", 1)
    runner = Waiting(timeout=30)
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        real_get = queue.kv_get
        outcomes: list[SignalOutcome] = []

        async def kv_get(key: bytes) -> bytes | None:
            value = await real_get(key)
            if key == BUFFER and not outcomes:
                outcomes.append(await runtime.signal(KEY, b"missed"))
            return value

        monkeypatch.setattr(queue, "kv_get", kv_get)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)
        assert outcomes == [SignalOutcome.BUFFERED]
        assert len(await jobs_in(queue, JobStatus.SCHEDULED)) == 1  # waiting after all
        clock.advance(30)
        await queue.promote_scheduled_now()
        await run_all(runtime)
        assert step1(runner) == [(1, KEY, b"missed", 1)]
        assert await real_get(BUFFER) is None


@pytest.mark.parametrize("attempt", range(4))
async def test_a_timeout_racing_a_wake_continues_the_run_once(
    clock: MockClock, attempt: int
) -> None:
    runner = Waiting(timeout=10)
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)
        clock.advance(10)
        outcomes: list[SignalOutcome] = []

        async def signal() -> None:
            await trio.sleep(0.001 * attempt)
            outcomes.append(await runtime.signal(KEY, b"sig"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(signal)
            nursery.start_soon(queue.promote_scheduled_now)
            nursery.start_soon(run_all, runtime)
        await run_all(runtime)
        [(_, _, got, _)] = step1(runner)  # step 1 ran exactly once
        leftover = await queue.kv_get(BUFFER)
        if outcomes == [SignalOutcome.DELIVERED]:
            assert got == b"sig" and leftover is None
        else:
            assert outcomes == [SignalOutcome.BUFFERED]
            # The deadline won: the step took the signal, or it stays buffered for the next.
            assert (got == b"sig") == (leftover is None)
        assert await queue.kv_get(WAIT) is None


async def test_a_crash_between_the_buffer_write_and_the_wake_converges(
    clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = Waiting(timeout=30)
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await runtime.submit(RunSpec(input=b"x", run_id="r2"))
        await run_all(runtime)  # r2 failed: r1 waits on the key

        async def dies(job_id: str, payload: bytes | None = None) -> WakeOutcome:
            raise taquba.StorageUnavailable("the process died here")

        with monkeypatch.context() as patch:
            patch.setattr(queue, "wake_scheduled", dies)
            with pytest.raises(taquba.StorageUnavailable):
                await runtime.signal(KEY, b"lost?")
        assert await queue.kv_get(BUFFER) is not None
        # Nobody signals again: the waiter takes the buffered signal at its deadline.
        clock.advance(30)
        await queue.promote_scheduled_now()
        await run_all(runtime)
        assert step1(runner) == [(1, KEY, b"lost?", 1)]
        assert (await queue.kv_scan(b"workflow/workflow/signal")).entries == []


async def test_a_crash_between_the_buffer_write_and_the_wake_then_a_new_signal(
    clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = Waiting()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)

        async def dies(job_id: str, payload: bytes | None = None) -> WakeOutcome:
            raise taquba.StorageUnavailable("the process died here")

        with monkeypatch.context() as patch:
            patch.setattr(queue, "wake_scheduled", dies)
            with pytest.raises(taquba.StorageUnavailable):
                await runtime.signal(KEY, b"first")
        assert await runtime.signal(KEY, b"second") is SignalOutcome.DELIVERED
        await run_all(runtime)
        assert step1(runner) == [(1, KEY, b"second", 1)]
        assert (await queue.kv_scan(b"workflow/workflow/signal")).entries == []


async def test_a_crash_between_the_wake_and_the_clean_up_converges(
    clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signaller dies after its wake: the woken step cleans up; no signal is taken twice."""
    runner = Waiting()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)

        async def dies(key: bytes, expected: bytes | None, new: bytes | None) -> bool:
            raise taquba.StorageUnavailable("the process died here")

        with monkeypatch.context() as patch:
            patch.setattr(queue, "kv_compare_and_set", dies)
            with pytest.raises(taquba.StorageUnavailable):
                await runtime.signal(KEY, b"once")
        assert await queue.kv_get(BUFFER) is not None
        assert await queue.kv_get(WAIT) is not None
        await run_all(runtime)
        assert step1(runner) == [(1, KEY, b"once", 1)]
        assert (await queue.kv_scan(b"workflow/workflow/signal")).entries == []
        # A later wait on the key does not take the delivered signal again.
        await runtime.submit(RunSpec(input=b"x", run_id="r2"))
        await run_all(runtime)
        assert len(await jobs_in(queue, JobStatus.SCHEDULED)) == 1


async def test_a_redelivered_woken_step_reads_the_same_signal(clock: MockClock) -> None:
    seen: list[tuple[bytes | None, int]] = []
    outcomes: list[SignalOutcome] = []

    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        if step.number == 0:
            return Continue(b"", on_signal=KEY, timeout=60)
        seen.append((step.signal, step.attempt))
        if step.attempt == 1:
            # A later signal on the key does not change what the retry reads.
            outcomes.append(await runtime.signal(KEY, b"second"))
            raise TransientStepError("try again")
        return Succeed(step.signal or b"")

    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)
        assert await runtime.signal(KEY, b"first") is SignalOutcome.DELIVERED
        await run_all(runtime)
        assert seen == [(b"first", 1), (b"first", 2)]
        assert outcomes == [SignalOutcome.BUFFERED]
        assert await result(runtime, "r1") == b"first"
        assert records.decode_signal(await queue.kv_get(BUFFER) or b"") == b"second"


async def test_clear_signal_discards_a_buffered_signal(clock: MockClock) -> None:
    runner = Waiting()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner)
        assert await runtime.clear_signal(KEY) is False
        await runtime.signal(KEY, b"stale")
        assert await runtime.clear_signal(KEY) is True
        assert await runtime.clear_signal(KEY) is False
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)
        assert len(await jobs_in(queue, JobStatus.SCHEDULED)) == 1  # waits: nothing buffered


async def test_a_waiting_run_survives_a_restart(store: Store, clock: MockClock) -> None:
    runner = Waiting()
    async with opened(store, clock=clock) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)
    async with opened(store, clock=clock) as queue:
        runtime = Runtime(queue, runner)
        assert await runtime.signal(KEY, b"after restart") is SignalOutcome.DELIVERED
        await run_all(runtime)
        assert await result(runtime, "r1") == b"after restart"


async def test_a_cancelled_waiter_leaves_no_live_waiter(clock: MockClock) -> None:
    hook = Hook()
    runner = Waiting()
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)
        assert await runtime.cancel("r1")
        await run_all(runtime)
        assert [o.status for o in hook.outcomes] == [TerminalStatus.CANCELLED]
        assert await runtime.signal(KEY, b"nobody") is SignalOutcome.BUFFERED
        assert await queue.kv_get(WAIT) is None
        await runtime.submit(RunSpec(input=b"x", run_id="r2"))
        await run_all(runtime)  # a new waiter takes the buffered signal; no duplicate error
        assert await result(runtime, "r2") == b"nobody"


async def test_replay_keeps_a_wait_with_the_remaining_timeout(clock: MockClock) -> None:
    raw = records.encode_replay(Continue(b"p", on_signal=KEY, timeout=30), 1_000)
    outcome, stored_at, timeout_ms = records.decode_replay(raw)
    assert outcome == Continue(b"p", on_signal=KEY, timeout=30)
    assert (stored_at, timeout_ms) == (1_000, 30_000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"on_signal": KEY},
        {"on_signal": KEY, "timeout": 1, "delay": 1},
        {"timeout": 1},
        {"on_signal": "", "timeout": 1},
        {"on_signal": "k" * 257, "timeout": 1},
        {"on_signal": KEY, "timeout": -1},
        {"on_signal": KEY, "timeout": float("nan")},
    ],
)
def test_continue_on_signal_validates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(taquba.UsageError):
        Continue(b"", **kwargs)


async def test_signal_validates(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, Waiting())
        with pytest.raises(taquba.UsageError):
            await runtime.signal("", b"")
        with pytest.raises(taquba.UsageError):
            await runtime.signal(KEY, "text")  # type: ignore[arg-type]


def test_the_guide_example_of_a_signal_runs(tmp_path: Path) -> None:
    text = (Path(__file__).parents[3] / "docs/guides/taquba-workflow.md").read_text()
    section = text[text.index("## Waiting for a signal") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("```", start)]
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "succeeded invoice-7 approved" in result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
@pytest.mark.parametrize("point", ["wake", "cleanup"])
async def test_a_signaller_killed_mid_signal_converges(tmp_path: Path, point: str) -> None:
    """SIGKILL after the buffer write (before the wake), or after the wake (before the clean-up)."""
    store_dir = tmp_path / "store"
    child_script = Path(__file__).with_name("wf_signal_crash_child.py")
    with trio.fail_after(30):
        async with open_child(child_script, str(store_dir), point) as child:
            await child.expect(f"AT {point}")
            await child.kill()
    clock = MockClock(taquba.SystemClock().now_ms())  # the child ran on the system clock
    async with taquba.open_queue(store_dir, "signals", clock=clock) as queue:
        runtime = Runtime(queue, Waiting(key="approval:crash"))
        wait = keys.signal_wait_key("workflow", "approval:crash")
        buffer = keys.signal_buffer_key("workflow", "approval:crash")
        assert await queue.kv_get(buffer) is not None  # the signal was buffered durably
        if point == "wake":
            assert len(await jobs_in(queue, JobStatus.SCHEDULED)) == 1  # still waiting
            assert await queue.kv_get(wait) is not None
            clock.advance(3600)  # nobody signals again: taken at the deadline
            await queue.promote_scheduled_now()
        await run_all(runtime)
        assert await result(runtime, "waiting") == b"sent before the crash"
        assert (await queue.kv_scan(b"workflow/workflow/signal")).entries == []


async def test_a_retried_step_with_a_leftover_waiter_entry_is_not_woken_again(
    clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step resolved (pinned) its signal and died before removing its waiter entry; its
    retry is scheduled (backoff). A new signal must not be swallowed by waking it."""
    runner = Waiting()
    config = taquba.QueueConfig(retry_backoff_base=30, lease_duration=60)
    async with opened(clock=clock, config=config) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=b"x", run_id="r1"))
        await run_all(runtime)
        real_cas = queue.kv_compare_and_set

        async def dies_on_the_entry(key: bytes, expected: bytes | None, new: bytes | None) -> bool:
            if key == WAIT:
                raise taquba.StorageUnavailable("the process died here")
            return await real_cas(key, expected, new)

        with monkeypatch.context() as patch:
            # The signal's own clean-up and the step's removal of its entry both fail.
            patch.setattr(queue, "kv_compare_and_set", dies_on_the_entry)
            with pytest.raises(taquba.StorageUnavailable):
                await runtime.signal(KEY, b"first")
            await run_all(runtime)  # step 1 resolves "first", then fails: retried later
        assert await queue.kv_get(WAIT) is not None
        assert len(await jobs_in(queue, JobStatus.SCHEDULED)) == 1
        assert await runtime.signal(KEY, b"second") is SignalOutcome.BUFFERED
        clock.advance(60)
        await queue.promote_scheduled_now()
        await run_all(runtime)
        assert await result(runtime, "r1") == b"first"
        assert records.decode_signal(await queue.kv_get(BUFFER) or b"") == b"second"
