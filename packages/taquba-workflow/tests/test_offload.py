"""Workflows on a queue that offloads payloads (`taquba.QueueConfig.payload_offload_threshold`).

A step's payload (the run's input, then each `Continue` payload) is its job's queue payload,
and so is a terminal notification's outcome: above the threshold they live in objects of their
own. Every step, replay, retry and hook must see the whole payload. Signal payloads are not
queue payloads: they travel in KV (the buffer) and in the woken job's record
(`taquba.JobRecord.wake_payload`), inline whatever their size.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import taquba
from taquba import JobStatus, LeaseHandle, MockClock, QueueConfig, Store
from taquba_workflow import (
    Continue,
    InputMismatch,
    PermanentStepError,
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
from wf_support import Hook, jobs_in, opened, run_all

THRESHOLD = 64
CONFIG = QueueConfig(retry_backoff_base=0, lease_duration=60, payload_offload_threshold=THRESHOLD)
BIG = b"i" * 1000


def payload(number: int) -> bytes:
    """The (large) payload of step ``number``."""
    return bytes([ord("a") + number]) * (1000 + number)


async def payload_objects(queue: taquba.Queue) -> list[str]:
    """The offloaded payload objects in the queue's store (``db/<name>/payloads/<ref>``)."""
    return [name for name in await queue.store.list_blobs("db") if "/payloads/" in name]


async def assert_offloaded(queue: taquba.Queue, job_id: str) -> None:
    record = await queue.get_job(job_id)
    assert record is not None
    assert record.payload_ref is not None, "the payload was stored inline, not offloaded"


class Chain:
    """Three steps: each checks the payload it got and continues with the next large one."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, bytes]] = []
        self.fail_step_1_once = False

    async def run_step(self, step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        self.seen.append((step.number, step.attempt, step.payload))
        if step.number == 1 and self.fail_step_1_once and step.attempt == 1:
            raise TransientStepError("once more")
        if step.number < 2:
            return Continue(payload(step.number + 1))
        return Succeed(step.payload + b"!")


async def test_a_run_passes_large_payloads_from_step_to_step(store: Store) -> None:
    chain = Chain()
    chain.fail_step_1_once = True
    hook = Hook()
    async with opened(store, config=CONFIG) as queue:
        runtime = Runtime(queue, chain, hook)
        await runtime.submit(RunSpec(input=payload(0), run_id="r"))
        [first] = await jobs_in(queue, JobStatus.PENDING)
        await assert_offloaded(queue, first.id)
        assert first.payload == payload(0)  # list_jobs materializes
        await run_all(runtime)
        assert chain.seen == [
            (0, 1, payload(0)),
            (1, 1, payload(1)),
            (1, 2, payload(1)),  # the retry reads the same object
            (2, 1, payload(2)),
        ]
        # The notification's payload (the outcome, with the large result) was offloaded too.
        assert [(o.status, o.result) for o in hook.outcomes] == [
            (TerminalStatus.SUCCEEDED, payload(2) + b"!")
        ]
        outcome = await runtime.outcome("r")
        assert outcome is not None and outcome.result == payload(2) + b"!"
        assert await payload_objects(queue) == []


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_replay_after_a_crash_before_ack_is_keyed_by_the_large_payload(
    store: Store, clock: MockClock
) -> None:
    decided: list[bytes] = []

    async def first(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        decided.append(step.payload)
        return Continue(payload(1))

    async with opened(store, clock=clock, config=CONFIG) as queue:
        runtime = Runtime(queue, first, step_output_replay=True)
        await runtime.submit(RunSpec(input=payload(0), run_id="r"))
        claim = await queue.claim("workflow")
        assert claim is not None
        assert claim.job.payload_ref is not None
        effects = await runtime.process(claim.job, LeaseHandle(queue, claim))
        assert effects is not None  # computed and recorded, never committed: a crash

    chain = Chain()
    async with opened(store, clock=clock, config=CONFIG) as queue:
        runtime = Runtime(queue, chain, step_output_replay=True)
        await run_all(runtime)
        assert decided == [payload(0)]
        # Step 0 was replayed from its record (found by the payload's digest), not run again.
        assert chain.seen == [(1, 1, payload(1)), (2, 1, payload(2))]
        outcome = await runtime.outcome("r")
        assert outcome is not None and outcome.result == payload(2) + b"!"


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
@pytest.mark.parametrize("size", [THRESHOLD - 8, THRESHOLD, THRESHOLD + 1, 10_000])
async def test_a_large_signal_reaches_the_woken_step(
    store: Store, clock: MockClock, size: int
) -> None:
    signal = b"s" * size
    seen: list[tuple[bytes, bytes | None]] = []

    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        if step.number == 0:
            return Continue(payload(1), on_signal="k", timeout=3600)
        seen.append((step.payload, step.signal))
        return Succeed(step.signal or b"")

    async with opened(store, clock=clock, config=CONFIG) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=BIG, run_id="r"))
        await run_all(runtime)
        [waiting] = await jobs_in(queue, JobStatus.SCHEDULED)
        await assert_offloaded(queue, waiting.id)
        assert await runtime.signal("k", signal) is SignalOutcome.DELIVERED
        woken = await queue.get_job(waiting.id)
        assert woken is not None and woken.status is JobStatus.PENDING
        assert woken.payload == payload(1)  # the offloaded step payload, untouched by the wake
        assert woken.wake_payload is not None  # the signal rides inline in the record
        await run_all(runtime)
        assert seen == [(payload(1), signal)]
        outcome = await runtime.outcome("r")
        assert outcome is not None and outcome.result == signal


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_a_buffered_large_signal_is_taken_at_registration(
    store: Store, clock: MockClock
) -> None:
    signal = b"b" * 5000
    seen: list[tuple[bytes, bytes | None]] = []

    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        if step.number == 0:
            return Continue(payload(1), on_signal="k", timeout=3600)
        seen.append((step.payload, step.signal))
        return Succeed(b"")

    async with opened(store, clock=clock, config=CONFIG) as queue:
        runtime = Runtime(queue, runner)
        assert await runtime.signal("k", signal) is SignalOutcome.BUFFERED
        await runtime.submit(RunSpec(input=BIG, run_id="r"))
        await run_all(runtime)
        assert seen == [(payload(1), signal)]


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_kv_effects_of_a_step_with_a_large_payload(store: Store) -> None:
    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        # KV values are never offloaded: a large one is stored as it is.
        step.kv_put(f"app/{step.number}".encode(), step.payload)
        if step.number == 0:
            return Continue(payload(1))
        return Succeed(b"")

    async with opened(store, config=CONFIG) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=payload(0), run_id="r"))
        await run_all(runtime)
        assert await queue.kv_get(b"app/0") == payload(0)
        assert await queue.kv_get(b"app/1") == payload(1)


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_a_cancelled_run_is_retried_with_its_large_step_payload(
    store: Store, clock: MockClock
) -> None:
    seen: list[tuple[int, bytes]] = []

    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        seen.append((step.number, step.payload))
        if step.number == 0:
            return Continue(payload(1), delay=3600)
        return Succeed(step.payload)

    async with opened(store, clock=clock, config=CONFIG) as queue:
        runtime: Runtime[Any, Any] = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=payload(0), run_id="r"))
        await run_all(runtime)
        [sleeping] = await jobs_in(queue, JobStatus.SCHEDULED)
        await assert_offloaded(queue, sleeping.id)
        assert await runtime.cancel("r")
        await run_all(runtime)
        status = await runtime.status("r")
        assert status is not None and status.state is RunState.CANCELLED
        assert await queue.get_job(sleeping.id) is None
        assert await payload_objects(queue) == []  # the removed step's object went with it
        # The run stopped at step 1: a retry reruns it with the payload it had.
        assert await runtime.retry("r")
        await run_all(runtime)
        assert seen == [(0, payload(0)), (1, payload(1))]
        outcome = await runtime.outcome("r")
        assert outcome is not None and outcome.result == payload(1)


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_a_step_payload_above_the_kv_value_limit_fails_and_is_retried(
    store: Store, clock: MockClock
) -> None:
    # Nothing copies a step payload into a KV value: where a failed run stopped is kept in
    # its outcome blob, so a payload far above MAX_KV_VALUE_SIZE is fine.
    huge = b"h" * (taquba.MAX_KV_VALUE_SIZE * 2)
    seen: list[tuple[int, int]] = []

    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        seen.append((step.number, len(step.payload)))
        if step.number == 0:
            return Continue(huge)
        if len(seen) == 2:
            raise PermanentStepError("not yet")
        return Succeed(step.payload[:10])

    hook = Hook()
    async with opened(store, clock=clock, config=CONFIG) as queue:
        runtime: Runtime[Any, Any] = Runtime(queue, runner, hook)
        await runtime.submit(RunSpec(input=BIG, run_id="r"))
        await run_all(runtime)
        status = await runtime.status("r")
        assert status is not None and status.state is RunState.FAILED
        assert await runtime.retry("r")
        await run_all(runtime)
        assert seen == [(0, len(BIG)), (1, len(huge)), (1, len(huge))]
        assert [o.status for o in hook.outcomes] == [
            TerminalStatus.FAILED,
            TerminalStatus.SUCCEEDED,
        ]
        assert await payload_objects(queue) == []


@pytest.mark.parametrize("store", ["memory"], indirect=True)
async def test_a_signal_above_the_kv_value_limit_is_refused(store: Store, clock: MockClock) -> None:
    # Signals are not offloaded: they are buffered in KV (and ride the woken job's record).
    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        if step.number == 0:
            return Continue(b"", on_signal="k", timeout=3600)
        return Succeed(step.signal or b"")

    async with opened(store, clock=clock, config=CONFIG) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=BIG, run_id="r"))
        await run_all(runtime)
        with pytest.raises(taquba.KvValueTooLarge):
            await runtime.signal("k", b"s" * taquba.MAX_KV_VALUE_SIZE)
        [waiting] = await jobs_in(queue, JobStatus.SCHEDULED)  # still waiting, not woken
        assert waiting.wake_payload is None


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_racing_submissions_of_a_large_input_leave_one_object(store: Store) -> None:
    async with opened(store, config=CONFIG) as queue:
        # One runtime per submitter: a runtime serializes its own submissions of a run id.
        runtimes = [Runtime(queue, Chain()) for _ in range(4)]
        fresh: list[bool] = []

        async def submit(runtime: Runtime[Any, Any]) -> None:
            handle = await runtime.submit(RunSpec(input=payload(0), run_id="dup"))
            fresh.append(handle.newly_submitted)

        async with trio.open_nursery() as nursery:
            for runtime in runtimes:
                nursery.start_soon(submit, runtime)
        assert sorted(fresh) == [False, False, False, True]
        with pytest.raises(InputMismatch):
            await runtimes[0].submit(RunSpec(input=payload(1), run_id="dup"))
        # The enqueues that lost the race on the run's record deleted their objects.
        assert len(await payload_objects(queue)) == 1


async def test_a_step_whose_object_went_missing_ends_its_run(clock: MockClock) -> None:
    async def runner(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        return Succeed(b"")

    async with opened(clock=clock, config=CONFIG) as queue:
        runtime = Runtime(queue, runner)
        await runtime.submit(RunSpec(input=BIG, run_id="r"))
        [name] = await payload_objects(queue)
        assert await queue.store.delete_blob(f"db/{name}")  # lost outside taquba
        assert await run_all(runtime) == 0  # the claim dead-letters the step job
        assert (await queue.stats("workflow")).dead == 1
        assert await runtime.end_dead_step_runs_now() == 1
        await run_all(runtime)
        status = await runtime.status("r")
        assert status is not None and status.state is RunState.FAILED
