"""Runner-free reads of stored outcomes: `list_results` and `read_result`."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest
import trio

import taquba
from taquba import MockClock
from taquba_jobs import (
    DEFAULT_RESULT_PREFIX,
    Job,
    JobCancelled,
    JobContext,
    JobFailed,
    JobRunner,
    ResultSummary,
    list_results,
    read_result,
)
from taquba_jobs._records import MARKER_DIR, ResultRecord, encode_result


async def work(ctx: JobContext, value: str) -> str:
    if value.startswith("fail"):
        raise RuntimeError(f"broke on {value}")
    if value.startswith("stop"):
        raise JobCancelled(ctx.job_id, "stopped by the job")
    return value.upper()


WORK = Job(work, name="tests.work", max_attempts=1)


async def submit_and_settle(runner: JobRunner, serving: Any, values: list[str]) -> list[str]:
    """Submit ``values`` in order, serve until each has its outcome; returns the job ids."""
    handles = [await runner.submit(WORK, value) for value in values]
    async with serving(runner):
        for handle in handles:
            with trio.fail_after(30):  # a hang guard
                with contextlib.suppress(JobFailed, JobCancelled):
                    await handle.result()
    return [handle.job_id for handle in handles]


async def test_outcomes_of_a_real_runner_are_listed_and_read(
    queue: taquba.Queue, clock: MockClock, serving: Any
) -> None:
    runner = JobRunner(queue, [WORK], poll_interval=0.05)
    assert runner.result_prefix == DEFAULT_RESULT_PREFIX
    ok, failed, stopped = await submit_and_settle(runner, serving, ["ok", "fail-1", "stop-1"])

    page = await list_results(queue.store)
    assert [r.job_id for r in page.results] == [ok, failed, stopped]  # ids ascend: submission
    assert page.skipped == 0
    assert page.next_after is None
    by_id = {r.job_id: r for r in page.results}
    assert by_id[ok] == ResultSummary(
        job_id=ok,
        job_name="tests.work",
        outcome="succeeded",
        finished_at_ms=by_id[ok].finished_at_ms,
        error_type=None,
        error=None,
        permanent=False,
        attempts=1,
        size=len(taquba.Codec(str).encode("OK")),
    )
    assert by_id[ok].finished_at_ms == clock.now_ms()
    assert by_id[failed].outcome == "failed"
    assert by_id[failed].error_type == "builtins.RuntimeError"
    assert by_id[failed].error == "broke on fail-1"
    assert by_id[failed].size == 0
    assert by_id[stopped].outcome == "cancelled"
    assert by_id[stopped].error == "stopped by the job"

    stored = await read_result(queue.store, ok)
    assert stored is not None
    assert stored.outcome == "succeeded"
    assert stored.value is not None
    assert taquba.Codec(str).decode(stored.value) == "OK"
    assert stored.size == len(stored.value)
    missing = await read_result(queue.store, "01JZZZZZZZZZZZZZZZZZZZZZZZ")
    assert missing is None
    with pytest.raises(taquba.InvalidId):
        await read_result(queue.store, "../escape")
    # Another prefix holds nothing here.
    assert (await list_results(queue.store, result_prefix="other-results")).results == ()


async def test_paging_visits_every_result_once_in_order(queue: taquba.Queue, serving: Any) -> None:
    runner = JobRunner(queue, [WORK], poll_interval=0.05, result_prefix="paged/results")
    ids = await submit_and_settle(runner, serving, [f"v{i}" for i in range(7)])
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        page = await list_results(queue.store, result_prefix="paged/results", after=after, limit=3)
        pages += 1
        seen.extend(r.job_id for r in page.results)
        assert len(page.results) <= 3
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ids
    assert pages == 3


async def test_retention_markers_are_not_listed(queue: taquba.Queue, serving: Any) -> None:
    runner = JobRunner(
        queue, [WORK], poll_interval=0.05, result_retention=3600, sweep_interval=3600
    )
    ids = await submit_and_settle(runner, serving, ["a", "b", "c"])
    markers = await queue.store.list_blobs(f"{runner.result_prefix}/{MARKER_DIR}")
    assert len(markers) == 3
    # A job id sorting after the markers' directory (ids may be any [A-Za-z0-9_-]) is found.
    late = ResultRecord(
        "zz-after-markers", "tests.work", "succeeded", b"\xa1x", None, None, False, 1, 0
    )
    await queue.store.put_blob(f"{runner.result_prefix}/zz-after-markers", encode_result(late))
    first = await list_results(queue.store, limit=2)
    second = await list_results(queue.store, after=first.next_after, limit=2)
    listed = [r.job_id for r in first.results + second.results]
    assert listed == [*ids, "zz-after-markers"]
    assert second.next_after is not None  # a full page: the next one is empty
    last = await list_results(queue.store, after=second.next_after, limit=2)
    assert last.results == ()
    assert last.next_after is None


async def test_a_garbage_blob_is_skipped_counted_and_logged_once(
    queue: taquba.Queue, serving: Any, caplog: pytest.LogCaptureFixture
) -> None:
    runner = JobRunner(queue, [WORK], poll_interval=0.05)
    ids = await submit_and_settle(runner, serving, ["a", "b"])
    await queue.store.put_blob(f"{DEFAULT_RESULT_PREFIX}/01AAAAAAAAAAAAAAAAAAAAAAAA", b"\xc1junk")
    await queue.store.put_blob(f"{DEFAULT_RESULT_PREFIX}/01AAAAAAAAAAAAAAAAAAAAAAAB", b"\x93\x01")
    with caplog.at_level(logging.WARNING, logger="taquba_jobs"):
        page = await list_results(queue.store)
    assert [r.job_id for r in page.results] == ids
    assert page.skipped == 2
    warnings = [r for r in caplog.records if "do not decode" in r.getMessage()]
    assert len(warnings) == 1
    with pytest.raises(taquba.DataError):
        await read_result(queue.store, "01AAAAAAAAAAAAAAAAAAAAAAAA")


async def test_bad_arguments_are_usage_errors(queue: taquba.Queue) -> None:
    for limit in (0, 1001, True, 2.5):
        with pytest.raises(taquba.UsageError):
            await list_results(queue.store, limit=limit)  # pyright: ignore[reportArgumentType]
    with pytest.raises(taquba.UsageError):
        await list_results(queue.store, result_prefix="/")
    with pytest.raises(taquba.UsageError):
        await read_result(queue.store, "01AAAAAAAAAAAAAAAAAAAAAAAA", result_prefix="")
