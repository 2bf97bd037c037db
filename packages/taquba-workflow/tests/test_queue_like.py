"""`Runtime` over any `taquba.QueueLike`: submit, serve, wait, memos, hooks, cancel.

Runs over `taquba.testing.ForwardingQueue`, which has only the protocol's members (and of
the store only the four blob calls), each forwarding to a real `taquba.Queue`: whatever
passes here uses nothing a remote queue lacks.
"""

from __future__ import annotations

import trio

from taquba import MockClock
from taquba.testing import ForwardingQueue
from taquba_workflow import (
    Continue,
    RunSpec,
    RunState,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    TerminalStatus,
    read_run_outcome,
)
from wf_support import Hook, opened

HANG = 10  # seconds: bounds that only catch hangs


async def _steps(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
    remembered = await step.memo.get("seen")
    await step.memo.put("seen", (remembered or b"") + b"x")
    step.lease.renew(60)  # through the protocol
    if step.number < 2:
        return Continue(step.payload + str(step.number).encode())
    return Succeed(step.payload.upper())


async def test_a_runtime_over_the_protocol_runs_and_reports(clock: MockClock) -> None:
    hook = Hook()
    async with opened(clock=clock) as queue:
        forwarding = ForwardingQueue(queue)
        runtime = Runtime(forwarding, _steps, hook, poll_interval=0.05)
        assert runtime.queue is forwarding
        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.serve)
                handle = await runtime.submit(RunSpec(input=b"in", run_id="r1"))
                outcome = await handle.wait()
                await hook.wait_calls()
                runtime.shutdown()
        assert outcome is not None
        assert (outcome.status, outcome.result, outcome.final_step) == (
            TerminalStatus.SUCCEEDED,
            b"IN01",
            2,
        )
        assert [o.run_id for o in hook.outcomes] == ["r1"]
        status = await runtime.status("r1")
        assert status is not None
        assert status.state is RunState.SUCCEEDED
        assert await runtime.outcome("r1") == outcome
        stored = await read_run_outcome(forwarding.store, "r1")
        assert stored is not None
        assert stored.status is TerminalStatus.SUCCEEDED
        calls = forwarding.calls
        for member in ("claim_batch", "ack_with", "renew_lease", "store.put_blob", "kv_get"):
            assert calls[member] >= 1, member


async def test_a_run_submitted_on_one_queue_object_and_served_on_another(
    clock: MockClock,
) -> None:
    """Like a web process submitting and a worker process serving: nothing shared."""
    async with opened(clock=clock) as queue:
        producer = Runtime(ForwardingQueue(queue), _steps, poll_interval=0.05)
        worker = Runtime(ForwardingQueue(queue), _steps, poll_interval=0.05)
        with trio.fail_after(HANG):
            handles = [await producer.submit(RunSpec(input=b"a", run_id=f"r{i}")) for i in range(3)]
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.serve)
                outcomes = [await handle.wait() for handle in handles]
                worker.shutdown()
        assert [o.result if o else None for o in outcomes] == [b"A01"] * 3
        assert producer.statistics().steps_in_flight == 0


async def test_cancelling_a_run_over_the_protocol(clock: MockClock) -> None:
    started = trio.Event()

    async def forever(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        started.set()
        await step.wait_cancel_requested()  # the claim's CancelToken, through the protocol
        return Succeed(b"overridden by the cancel")

    async with opened(clock=clock) as queue:
        runtime = Runtime(ForwardingQueue(queue), forever, poll_interval=0.05)
        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.serve)
                handle = await runtime.submit(RunSpec(input=b"x", run_id="c1"))
                await started.wait()
                assert await runtime.cancel("c1")
                outcome = await handle.wait()
                runtime.shutdown()
        assert outcome is not None
        assert outcome.status is TerminalStatus.CANCELLED
