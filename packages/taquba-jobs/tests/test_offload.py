"""Jobs on a queue that offloads payloads (`taquba.QueueConfig.payload_offload_threshold`).

A job's encoded input is its queue payload, so an input above the threshold lives in an object
of its own and the record keeps `taquba.JobRecord.payload_ref`. Every delivery (the first, a
retry with per-job state, a child submitted from a job) must see the whole input; a racing
idempotent submission must leave no object behind. Results and per-job state are not queue
payloads (a result blob, a KV value): they are stored as they are, whatever their size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio

import taquba
from taquba import QueueConfig, Store
from taquba.testing import open_test_queue
from taquba_jobs import JobContext, JobFailed, JobRunner, job

THRESHOLD = 64
CONFIG = QueueConfig(retry_backoff_base=0, lease_duration=30, payload_offload_threshold=THRESHOLD)
BIG = "x" * 2000 + "!"  # encodes far above the threshold
HANG = 10  # seconds: bounds that only catch hangs


@dataclass(frozen=True)
class Progress:
    done: list[str]


@pytest.fixture
async def queue(store: Store) -> AsyncIterator[taquba.Queue]:
    async with open_test_queue(store, config=CONFIG) as queue:
        yield queue


async def payload_objects(queue: taquba.Queue) -> list[str]:
    """The offloaded payload objects in the queue's store (``db/<name>/payloads/<ref>``)."""
    return [name for name in await queue.store.list_blobs("db") if "/payloads/" in name]


async def assert_offloaded(queue: taquba.Queue, job_id: str) -> None:
    record = await queue.get_job(job_id)
    assert record is not None
    assert record.payload_ref is not None, "the input was stored inline, not offloaded"


def runner_for(queue: taquba.Queue, *jobs: Any) -> JobRunner:
    return JobRunner(queue, jobs, poll_interval=0.05)


async def test_a_large_input_reaches_the_job_and_its_result_comes_back(
    queue: taquba.Queue, serving: Any
) -> None:
    @job(name="tests.offload.echo")
    async def echo(ctx: JobContext, text: str) -> str:
        return text[::-1]

    runner = runner_for(queue, echo)
    handle = await runner.submit(echo, BIG)
    await assert_offloaded(queue, handle.job_id)
    assert len(await payload_objects(queue)) == 1
    async with serving(runner):
        with trio.fail_after(HANG):
            # The result (as large as the input) is a blob of its own, never offloaded.
            assert await handle.result() == BIG[::-1]
    # Acknowledged without keep_done: the record went, and the object with it.
    assert await payload_objects(queue) == []


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_retries_with_state_see_the_whole_input_on_every_attempt(
    queue: taquba.Queue, serving: Any
) -> None:
    seen: list[tuple[int, str, Progress | None]] = []

    @job(name="tests.offload.steps", max_attempts=5)
    async def steps(ctx: JobContext, text: str) -> list[str]:
        progress = await ctx.load_state(Progress)
        seen.append((ctx.attempt, text, progress))
        done = [*(progress.done if progress else []), f"step-{ctx.attempt}"]
        ctx.stage_state(Progress(done))
        if ctx.attempt < 3:
            raise ConnectionError(f"attempt {ctx.attempt}")
        return done

    runner = runner_for(queue, steps)
    async with serving(runner):
        with trio.fail_after(HANG):
            handle = await runner.submit(steps, BIG)
            assert await handle.result() == ["step-1", "step-2", "step-3"]
    assert seen == [
        (1, BIG, None),
        (2, BIG, Progress(["step-1"])),
        (3, BIG, Progress(["step-1", "step-2"])),
    ]
    assert await payload_objects(queue) == []


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_a_child_submitted_from_a_job_gets_its_large_input(
    queue: taquba.Queue, serving: Any
) -> None:
    @job(name="tests.offload.child")
    async def child(ctx: JobContext, text: str) -> int:
        return len(text)

    @job(name="tests.offload.parent")
    async def parent(ctx: JobContext, text: str) -> int:
        handle = await ctx.submit(child, text * 2, idempotency_key=f"{ctx.job_id}/child")
        await assert_offloaded(queue, handle.job_id)
        return await handle.result()

    runner = runner_for(queue, parent, child)
    async with serving(runner):
        with trio.fail_after(HANG):
            handle = await runner.submit(parent, BIG)
            assert await handle.result() == 2 * len(BIG)
    assert await payload_objects(queue) == []


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_racing_idempotent_submissions_of_a_large_input_leave_one_object(
    queue: taquba.Queue,
) -> None:
    @job(name="tests.offload.once")
    async def once(ctx: JobContext, text: str) -> int:
        return len(text)

    runner = runner_for(queue, once)
    ids: list[str] = []

    async def submit() -> None:
        handle = await runner.submit(once, BIG, idempotency_key="k")
        ids.append(handle.job_id)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(submit)
    assert len(set(ids)) == 1
    await assert_offloaded(queue, ids[0])
    # The losers' enqueues conflicted on the key's record: their objects were deleted.
    assert len(await payload_objects(queue)) == 1


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_an_input_above_the_kv_value_limit_runs_with_an_idempotency_key(
    queue: taquba.Queue, serving: Any
) -> None:
    # Only the input's digest goes into KV (the idempotency record); the result is a blob.
    huge = "h" * (taquba.MAX_KV_VALUE_SIZE * 2)

    @job(name="tests.offload.huge")
    async def echo(ctx: JobContext, text: str) -> str:
        return text

    runner = runner_for(queue, echo)
    handle = await runner.submit(echo, huge, idempotency_key="huge")
    await assert_offloaded(queue, handle.job_id)
    async with serving(runner):
        with trio.fail_after(HANG):
            assert await handle.result() == huge
    again = await runner.submit(echo, huge, idempotency_key="huge")
    assert (again.job_id, again.newly_submitted) == (handle.job_id, False)
    assert await again.result() == huge


class DeadLettered(taquba.Observer):
    """Sets ``event`` once a settlement that dead-lettered a job is durable."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def settled(self, queue_name: str, job: taquba.JobRecord, outcome: Any, **kw: Any) -> None:
        if kw["dead"]:
            self.event.set()


@pytest.mark.parametrize("store", ["memory"], indirect=True)
async def test_a_job_whose_object_went_missing_fails(queue: taquba.Queue, serving: Any) -> None:
    @job(name="tests.offload.lost")
    async def lost(ctx: JobContext, text: str) -> str:
        return text

    runner = runner_for(queue, lost)
    handle = await runner.submit(lost, BIG)
    [name] = await payload_objects(queue)
    assert await queue.store.delete_blob(f"db/{name}")  # lost outside taquba
    dead = DeadLettered()
    queue.add_observer(dead)
    async with serving(runner):
        # The claim dead-letters the job. Until then a read of the live job raises
        # `PayloadMissing` (the core's documented behaviour), so the handle is awaited once
        # the job is dead: a dead job whose object is gone reads, and fails as `JobFailed`.
        with trio.fail_after(HANG):
            await dead.event.wait()
        with trio.fail_after(HANG), pytest.raises(JobFailed):
            await handle.result()
