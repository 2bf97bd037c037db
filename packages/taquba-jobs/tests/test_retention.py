"""Result retention: terminal markers, and a sweep whose listing touches only expired ones."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio

import taquba
from taquba import MockClock, QueueConfig, Store
from taquba.testing import open_test_queue
from taquba_jobs import Job, JobContext, JobFailed, JobRunner, ResultNotFound
from taquba_jobs._records import dedup_key, parse_marker_name

RETENTION = 3600.0
FAST_RETRY = QueueConfig(retry_backoff_base=0)


def counting_job(calls: Counter[str]) -> Job[str, str]:
    async def work(ctx: JobContext, value: str) -> str:
        calls[value] += 1
        if value.startswith("fail"):
            raise RuntimeError(value)
        return value.upper()

    return Job(work, name="tests.work", max_attempts=1)


def retaining(queue: taquba.Queue, job: Job[Any, Any], **options: Any) -> JobRunner:
    options.setdefault("result_retention", RETENTION)
    options.setdefault("sweep_interval", 3600)  # tests sweep explicitly unless they say so
    return JobRunner(queue, [job], poll_interval=0.05, **options)


async def markers(runner: JobRunner) -> list[tuple[int, str]]:
    names = await runner.queue.store.list_blobs(f"{runner.result_prefix}/terminals")
    parsed = [parse_marker_name(name) for name in names]
    return [p for p in parsed if p is not None]


async def settled(queue: taquba.Queue, job_id: str) -> None:
    """Wait until the queue settled the job: a handle resolves just before the ack."""
    with trio.fail_after(30):  # a hang guard
        while await queue.get_job(job_id) is not None:  # noqa: ASYNC110 - watching storage
            await trio.sleep(0.01)


async def test_markers_are_written_for_every_terminal_outcome_only_with_retention(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    calls = Counter[str]()
    work = counting_job(calls)
    plain = JobRunner(queue, [work], poll_interval=0.05, result_prefix="plain")
    async with serving(plain):
        await (await plain.submit(work, "a")).result()
    assert await queue.store.list_blobs("plain/terminals") == []

    runner = retaining(queue, work)
    async with serving(runner):
        ok = await runner.submit(work, "ok")
        await ok.result()
        failed = await runner.submit(work, "fail")
        with pytest.raises(JobFailed):
            await failed.result()
    cancelled = await runner.submit(work, "never")
    await runner.cancel(cancelled.job_id)
    found = await markers(runner)
    assert sorted(job_id for _, job_id in found) == sorted(
        [ok.job_id, failed.job_id, cancelled.job_id]
    )
    assert all(at == clock.now_ms() for at, _ in found)


async def test_the_sweep_removes_only_expired_results_and_lists_only_expired_markers(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    """Listing cost is proportional to the expired set: 10 old markers among 200 young ones."""
    calls = Counter[str]()
    work = counting_job(calls)
    runner = retaining(queue, work)
    async with serving(runner):
        old = [await runner.submit(work, f"old-{i}", idempotency_key=f"old-{i}") for i in range(10)]
        for handle in old:
            await handle.result()
        clock.advance(RETENTION / 2)
        young = [await runner.submit(work, f"young-{i}") for i in range(200)]
        for handle in young:
            await handle.result()
    clock.advance(RETENTION / 2 + 0.001)  # the old ones are now just past the retention

    report = await runner.sweep_results_now()
    assert (report.listed, report.swept) == (10, 10)
    for i, handle in enumerate(old):
        assert not await handle.done()
        with pytest.raises(ResultNotFound):
            await handle.result()
        assert await queue.store.get_blob(runner.result_path(handle.job_id)) is None
        assert await queue.kv_get(dedup_key("jobs", f"old-{i}")) is None
    page = await queue.kv_scan(b"taquba-jobs/dedup/")
    assert page.entries == []  # the dedup records went with the results
    assert len(await markers(runner)) == 200
    assert all([await h.done() for h in young[:5]])

    again = await runner.sweep_results_now()
    assert (again.listed, again.swept) == (0, 0)


async def test_the_cutoff_is_strict(queue: taquba.Queue, clock: MockClock, serving: Any) -> None:
    work = counting_job(Counter())
    runner = retaining(queue, work)
    async with serving(runner):
        handle = await runner.submit(work, "edge")
        await handle.result()
    clock.advance(RETENTION)  # finished exactly `retention` ago: kept
    assert (await runner.sweep_results_now()).swept == 0
    clock.advance(0.001)
    assert (await runner.sweep_results_now()).swept == 1
    assert not await handle.done()


async def test_after_the_sweep_an_idempotent_resubmit_runs_the_job_again(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    calls = Counter[str]()
    work = counting_job(calls)
    runner = retaining(queue, work)
    async with serving(runner):
        first = await runner.submit(work, "x", idempotency_key="x")
        assert await first.result() == "X"
        cached = await runner.submit(work, "x", idempotency_key="x")
        assert not cached.newly_submitted
        clock.advance(RETENTION + 1)
        assert (await runner.sweep_results_now()).swept == 1
        rerun = await runner.submit(work, "x", idempotency_key="x")
        assert rerun.newly_submitted
        assert rerun.job_id != first.job_id
        assert await rerun.result() == "X"
    assert calls == {"x": 2}


async def test_serve_sweeps_periodically(queue: taquba.Queue, clock: MockClock) -> None:
    work = counting_job(Counter())
    runner = retaining(queue, work, sweep_interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.serve)
        handle = await runner.submit(work, "periodic")
        await handle.result()
        clock.advance(RETENTION + 1)
        with trio.fail_after(30):  # a hang guard
            while await handle.done():  # noqa: ASYNC110 - watching storage
                await trio.sleep(0.02)
        runner.shutdown()
    assert await markers(runner) == []


async def test_the_sweep_tolerates_missing_and_foreign_objects(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    work = counting_job(Counter())
    runner = retaining(queue, work)
    async with serving(runner):
        handle = await runner.submit(work, "gone", idempotency_key="gone")
        await handle.result()
    await queue.store.delete_blob(runner.result_path(handle.job_id))  # already deleted
    await queue.store.put_blob(f"{runner.result_prefix}/terminals/99999999999999999999_x", b"?")
    clock.advance(RETENTION + 1)
    report = await runner.sweep_results_now()
    assert (report.listed, report.swept) == (2, 1)  # the foreign name is listed, then skipped
    assert await queue.kv_get(dedup_key("jobs", "gone")) is None


async def test_a_dedup_record_taken_over_by_a_newer_job_is_kept(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    """Sweeping an old job must not free a key that a newer job now holds."""
    work = counting_job(Counter())
    runner = retaining(queue, work)
    async with serving(runner):
        first = await runner.submit(work, "k", idempotency_key="k")
        await first.result()
        await settled(queue, first.job_id)
        await queue.store.delete_blob(runner.result_path(first.job_id))  # stale: replaced
        clock.advance(100)
        second = await runner.submit(work, "k", idempotency_key="k")
        assert second.newly_submitted
        await second.result()
    key = dedup_key("jobs", "k")
    clock.advance(RETENTION - 50)  # past the first job's retention, not the second's
    assert (await runner.sweep_results_now()).swept == 1
    assert await queue.kv_get(key) is not None
    again = await runner.submit(work, "k", idempotency_key="k")
    assert (again.job_id, again.newly_submitted) == (second.job_id, False)
    clock.advance(100)
    assert (await runner.sweep_results_now()).swept == 1
    assert await queue.kv_get(key) is None


async def test_retention_on_every_store(store: Store, serving: Any) -> None:
    clock = MockClock(1_800_000_000_000)
    work = counting_job(Counter())
    async with open_test_queue(store, clock=clock, config=FAST_RETRY) as queue:
        runner = retaining(queue, work)
        async with serving(runner):
            old = await runner.submit(work, "old", idempotency_key="old")
            await old.result()
            clock.advance(10)
            young = await runner.submit(work, "young")
            await young.result()
        clock.advance(RETENTION - 5)
        report = await runner.sweep_results_now()
        assert (report.listed, report.swept) == (1, 1)
        assert not await old.done()
        assert await young.result() == "YOUNG"


async def test_sweeping_needs_retention(queue: taquba.Queue) -> None:
    runner = JobRunner(queue, [counting_job(Counter())])
    with pytest.raises(taquba.UsageError, match="result_retention"):
        await runner.sweep_results_now()
