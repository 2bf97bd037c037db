"""Fan-out: a thousand jobs submitted and awaited concurrently, then replayed for free."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import trio
import trio.lowlevel

import taquba
from taquba import QueueConfig, Store
from taquba.testing import open_test_queue
from taquba_jobs import JobContext, JobHandle, JobRunner, job

N = 1_000


@dataclass(frozen=True)
class Item:
    index: int
    label: str


calls = Counter[int]()


@job(name="tests.fanout.double")
async def double(ctx: JobContext, item: Item) -> int:
    calls[item.index] += 1
    await trio.lowlevel.checkpoint()
    return item.index * 2


async def submit_all(runner: JobRunner, *, keyed: bool) -> list[JobHandle[int]]:
    handles: list[JobHandle[int] | None] = [None] * N
    async with trio.open_nursery() as nursery:
        for i in range(N):

            async def submit_one(i: int = i) -> None:
                key = f"batch-1/{i}" if keyed else None
                handles[i] = await runner.submit(double, Item(i, f"item {i}"), idempotency_key=key)

            nursery.start_soon(submit_one)
    assert all(h is not None for h in handles)
    return [h for h in handles if h is not None]


async def await_all(handles: list[JobHandle[int]]) -> list[int]:
    results: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        for i, handle in enumerate(handles):

            async def wait_one(i: int = i, handle: JobHandle[int] = handle) -> None:
                assert i not in results  # each handle resolves exactly once
                results[i] = await handle.result()

            nursery.start_soon(wait_one)
    return [results[i] for i in range(len(handles))]


async def test_a_thousand_jobs_awaited_concurrently_then_replayed_without_running(
    memory_store: Store, serving: Any
) -> None:
    calls.clear()
    async with open_test_queue(memory_store, config=QueueConfig(retry_backoff_base=0)) as queue:
        runner = JobRunner(queue, [double], concurrency=64, poll_interval=0.05)
        with trio.fail_after(60):
            async with serving(runner):
                handles = await submit_all(runner, keyed=True)
                assert all(h.newly_submitted for h in handles)
                assert await await_all(handles) == [2 * i for i in range(N)]
        assert calls == dict.fromkeys(range(N), 1)
        assert runner.statistics().executions == N
        stats = await queue.stats("jobs")
        assert (stats.done, stats.pending, stats.claimed, stats.dead) == (N, 0, 0, 0)

    # A new process replays the same batch: every submission finds its job, nothing runs.
    async with open_test_queue(memory_store) as queue:
        runner = JobRunner(queue, [double], concurrency=64, poll_interval=0.05)
        with trio.fail_after(60):
            async with serving(runner):
                replayed = await submit_all(runner, keyed=True)
                assert not any(h.newly_submitted for h in replayed)
                assert [h.job_id for h in replayed] == [h.job_id for h in handles]
                assert await await_all(replayed) == [2 * i for i in range(N)]
        assert runner.statistics().executions == 0
        assert calls == dict.fromkeys(range(N), 1)
        assert (await queue.stats("jobs")).done == N  # no new job was enqueued


async def test_waiting_handles_do_not_poll_storage(queue: taquba.Queue, serving: Any) -> None:
    """Handles read storage on entry; completions reach them in memory.

    Counting the storage reads about each job while 100 handles wait and 100 jobs complete
    one after another: per job at most the handle's look at the result blob and at the queue
    record on entry (`Queue.wait_for_completion`) and the worker's look at the result blob
    before running it; never one per handle per completion, and none on the wake itself.
    """
    calls.clear()
    reads = Counter[str]()
    read_result = JobRunner._read_result  # pyright: ignore[reportPrivateUsage]
    get_job = queue.get_job

    async def counting_read_result(self: JobRunner, job_id: str) -> Any:
        reads[job_id] += 1
        return await read_result(self, job_id)

    async def counting_get_job(job_id: str) -> Any:
        reads[job_id] += 1
        return await get_job(job_id)

    runner = JobRunner(queue, [double], concurrency=1, poll_interval=0.05)
    runner._read_result = counting_read_result.__get__(runner)  # type: ignore[method-assign]
    queue.get_job = counting_get_job  # type: ignore[method-assign]
    handles = [await runner.submit(double, Item(i, "x")) for i in range(100)]
    async with serving(runner):
        assert await await_all(handles) == [2 * i for i in range(100)]
    assert len(reads) == 100
    assert max(reads.values()) <= 3
