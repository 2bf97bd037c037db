"""`JobRunner` over any `taquba.QueueLike`: submit, run, await results, cancel, sweep.

Runs over `taquba.testing.ForwardingQueue`, which has only the protocol's members (and of
the store only the four blob calls), each forwarding to a real `taquba.Queue`: whatever
passes here uses nothing a remote queue lacks.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, cast

import pytest
import trio

import taquba
from taquba import CancelOutcome, JobStatus, MockClock, PermanentFailure, QueueLike
from taquba.testing import ForwardingQueue
from taquba_jobs import JobCancelled, JobContext, JobFailed, JobRunner, job

HANG = 10  # seconds: bounds that only catch hangs


@dataclass(frozen=True)
class Pair:
    a: int
    b: int


@job(name="proto.add")
async def add(ctx: JobContext, pair: Pair) -> int:
    ctx.lease.ensure_at_least(60)  # renews through the protocol
    return pair.a + pair.b


@job(name="proto.refuse")
async def refuse(ctx: JobContext, value: int) -> int:
    raise PermanentFailure(f"no {value}")


@job(name="proto.parent")
async def parent(ctx: JobContext, value: int) -> int:
    child = await ctx.submit(add, Pair(value, 1), idempotency_key=f"{ctx.job_id}/child")
    return await child.result()


async def test_a_runner_over_the_protocol_submits_runs_and_awaits(
    queue: taquba.Queue, serving: Any
) -> None:
    forwarding = ForwardingQueue(queue)
    runner = JobRunner(forwarding, [add, refuse, parent], poll_interval=0.05)
    assert runner.queue is forwarding
    with trio.fail_after(HANG):
        async with serving(runner):
            handle = await runner.submit(add, Pair(2, 3), idempotency_key="k")
            assert await handle.result() == 5
            again = await runner.submit(add, Pair(2, 3), idempotency_key="k")
            assert not again.newly_submitted
            assert again.job_id == handle.job_id
            assert await again.result() == 5
            failing = await runner.submit(refuse, 7)
            with pytest.raises(JobFailed) as info:
                await failing.result()
            assert await (await runner.submit(parent, 41)).result() == 42
    assert info.value.message == "no 7"
    assert info.value.permanent
    # The outcomes live in the real queue's store, written through the protocol's blob calls.
    assert await queue.store.get_blob(runner.result_path(handle.job_id)) is not None
    dead = await queue.get_job(failing.job_id)
    assert dead is not None
    assert dead.status is JobStatus.DEAD
    calls = forwarding.calls
    for member in ("claim_batch", "ack_with", "dead_letter", "renew_lease", "store.put_blob"):
        assert calls[member] >= 1, member
    assert (runner.statistics().succeeded, runner.statistics().failed) == (3, 1)


async def test_submitter_and_runner_on_separate_queue_objects(
    queue: taquba.Queue, serving: Any
) -> None:
    """Like a web process submitting and a worker process running: no shared registry."""
    producer = JobRunner(ForwardingQueue(queue), [add], poll_interval=0.05)
    worker = JobRunner(ForwardingQueue(queue), [add], poll_interval=0.05)
    with trio.fail_after(HANG):
        handles = [await producer.submit(add, Pair(i, i)) for i in range(5)]
        async with serving(worker):
            results = [await handle.result() for handle in handles]
    assert results == [0, 2, 4, 6, 8]
    assert producer.statistics().executions == 0
    assert worker.statistics().succeeded == 5


async def test_cancelling_a_running_job_over_the_protocol(
    queue: taquba.Queue, serving: Any
) -> None:
    started = trio.Event()

    @job(name="proto.long")
    async def long_job(ctx: JobContext, value: int) -> int:
        started.set()
        await trio.sleep_forever()
        return value

    runner = JobRunner(ForwardingQueue(queue), [long_job], poll_interval=0.05)
    with trio.fail_after(HANG):
        async with serving(runner):
            handle = await runner.submit(long_job, 1)
            await started.wait()
            assert await runner.cancel(handle.job_id) is CancelOutcome.REQUESTED
            with pytest.raises(JobCancelled):
                await handle.result()


async def test_result_retention_sweeps_over_the_protocol(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    forwarding = ForwardingQueue(queue)
    runner = JobRunner(forwarding, [add], poll_interval=0.05, result_retention=60)
    with trio.fail_after(HANG):
        async with serving(runner):
            handle = await runner.submit(add, Pair(1, 1), idempotency_key="swept")
            assert await handle.result() == 2
    clock.advance(61)
    report = await runner.sweep_results_now()
    assert report.swept == 1
    assert not await handle.done()
    assert forwarding.calls["store.list_blobs"] >= 1
    assert forwarding.calls["store.delete_blob"] >= 1


class _NoWeakref:
    """A QueueLike that cannot be weakly referenced (slots, no ``__weakref__``)."""

    __slots__ = ("_inner",)

    def __init__(self, inner: ForwardingQueue) -> None:
        self._inner = inner


def _forward(name: str) -> property:
    return property(lambda self: getattr(self._inner, name))


# Members defined on the class, not through ``__getattr__``: from Python 3.12 on,
# ``isinstance`` against a runtime-checkable protocol looks members up statically.
for _name in dir(QueueLike):
    if not _name.startswith("_"):
        setattr(_NoWeakref, _name, _forward(_name))


async def test_a_queue_like_without_weakref_support_still_works(
    queue: taquba.Queue, serving: Any
) -> None:
    no_weakref = _NoWeakref(ForwardingQueue(queue))
    with pytest.raises(TypeError):
        weakref.ref(no_weakref)
    runner = JobRunner(cast("QueueLike", no_weakref), [add], poll_interval=0.05)
    with trio.fail_after(HANG):
        async with serving(runner):
            assert await (await runner.submit(add, Pair(3, 4))).result() == 7


def test_a_runner_refuses_what_is_not_queue_like() -> None:
    with pytest.raises(taquba.InvalidArgument, match="QueueLike"):
        JobRunner(object(), [add])  # type: ignore[arg-type]
