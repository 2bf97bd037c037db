"""Memo retention: terminal markers and the sweep, on memory, local-disk and S3 stores."""

from __future__ import annotations

import logging

import pytest
import trio

import taquba
from taquba import MockClock, Store
from taquba_workflow import (
    Fail,
    MemoStore,
    PermanentStepError,
    RunSpec,
    RunState,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    SweepReport,
    TransientStepError,
    read_run_outcome,
)
from wf_support import opened, run_all

RETENTION = 3600.0


async def remember(step: Step) -> StepOutcome:
    await step.memo.put("work", step.payload)
    if step.payload == b"fail":
        return Fail("no")
    if step.payload == b"boom":
        raise PermanentStepError("boom")
    return Succeed(step.payload)


async def test_markers_are_written_for_every_end_only_with_retention(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        keep = Runtime(queue, remember, queue_name="keep", memo_prefix="keep")
        await keep.submit(RunSpec(input=b"ok", run_id="a"))
        await run_all(keep)
        assert await keep.memos.list_terminal_markers() == []

        runtime = Runtime(queue, remember, memo_retention=RETENTION)
        for run_id, payload in [("ok", b"ok"), ("failed", b"fail"), ("boom", b"boom")]:
            await runtime.submit(RunSpec(input=payload, run_id=run_id))
            await run_all(runtime)
            clock.advance(1)
        markers = await runtime.memos.list_terminal_markers()
        assert [m.run_id for m in markers] == ["boom", "failed", "ok"]  # newest first
        assert [m.terminal_at_ms for m in markers] == [
            clock.now_ms() - 1000,
            clock.now_ms() - 2000,
            clock.now_ms() - 3000,
        ]  # the runtime clock's time of the end


async def test_retries_and_running_cancels_write_no_marker_until_settled(
    clock: MockClock,
) -> None:
    holder: dict[str, Runtime] = {}
    markers_seen: list[int] = []

    async def runner(step: Step) -> StepOutcome:
        if step.run_id == "retry" and step.attempt == 1:
            raise TransientStepError("again")
        if step.run_id == "cancel":
            await holder["rt"].cancel("cancel")
            markers_seen.append(len(await holder["rt"].memos.list_terminal_markers()))
        return Succeed(b"")

    async with opened(clock=clock) as queue:
        runtime = holder["rt"] = Runtime(queue, runner, memo_retention=RETENTION)
        await runtime.submit(RunSpec(input=b"", run_id="retry"))
        from taquba.testing import drain

        await drain(queue, "workflow", runtime.process, max_jobs=1)  # the failed attempt
        assert await runtime.memos.list_terminal_markers() == []
        await run_all(runtime)
        await runtime.submit(RunSpec(input=b"", run_id="cancel"))
        await run_all(runtime)
        assert markers_seen == [1]  # only "retry"'s marker while "cancel" was still running
        assert sorted(m.run_id for m in await runtime.memos.list_terminal_markers()) == [
            "cancel",
            "retry",
        ]


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
async def test_sweep_removes_only_expired_runs(
    request: pytest.FixtureRequest, clock: MockClock, kind: str
) -> None:
    store: Store = request.getfixturevalue(f"{kind}_store")
    async with opened(store, clock=clock) as queue:
        runtime = Runtime(queue, remember, memo_retention=RETENTION)
        for run_id in ["old-1", "old-10"]:
            await runtime.submit(RunSpec(input=b"ok", run_id=run_id))
        await run_all(runtime)
        clock.advance(RETENTION / 2)
        await runtime.submit(RunSpec(input=b"ok", run_id="young"))
        await run_all(runtime)
        await runtime.memos.memo("no-marker", 0).put("work", b"kept")  # a run without a marker
        clock.advance(RETENTION / 2 + 1)

        report = await runtime.sweep_now()
        assert (report.listed, report.runs_cleared) == (2, 2)
        assert report.blobs_deleted == 4  # a memo and an outcome blob per expired run
        for run_id in ["old-1", "old-10"]:
            assert await runtime.memos.memo(run_id, 0).get("work") is None
            assert await runtime.status(run_id) is None  # the run is forgotten
            assert await read_run_outcome(store, run_id) is None
        assert await runtime.memos.memo("young", 0).get("work") == b"ok"
        assert await runtime.memos.memo("no-marker", 0).get("work") == b"kept"
        status = await runtime.status("young")
        assert status is not None and status.state is RunState.SUCCEEDED
        assert [m.run_id for m in await runtime.memos.list_terminal_markers()] == ["young"]
        assert (await runtime.sweep_now()).listed == 0


async def test_a_sweep_lists_only_the_expired_markers(memory_store: Store) -> None:
    """The listing cost is proportional to the expired set, however many markers are kept."""
    memos = MemoStore(memory_store)
    for i in range(300):
        await memos.write_terminal_marker(f"kept-{i}", 1_000_000 + i)
    for i in range(7):
        await memos.write_terminal_marker(f"expired-{i}", 1_000 + i)
    expired = await memos.list_expired_terminal_markers(500_000)
    assert sorted(m.run_id for m in expired) == [f"expired-{i}" for i in range(7)]
    assert [m.terminal_at_ms for m in expired] == sorted(
        (m.terminal_at_ms for m in expired), reverse=True
    )
    # paging with start_after walks the expired set only
    first = await memos.list_expired_terminal_markers(500_000, limit=3)
    rest = await memos.list_expired_terminal_markers(500_000, start_after=first[-1].name, limit=100)
    assert [m.name for m in first + rest] == [m.name for m in expired]
    # a cutoff equal to a marker's time keeps it (expired means strictly older)
    assert [m.run_id for m in await memos.list_expired_terminal_markers(1_000)] == []
    assert [m.run_id for m in await memos.list_expired_terminal_markers(1_001)] == ["expired-0"]
    assert await memos.delete_terminal_marker(expired[0])
    assert not await memos.delete_terminal_marker(expired[0])


async def test_the_runtime_sweep_lists_only_expired_markers(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, remember, memo_retention=RETENTION)
        for i in range(5):
            await runtime.submit(RunSpec(input=b"ok", run_id=f"early-{i}"))
        await run_all(runtime)
        clock.advance(RETENTION + 1)
        for i in range(260):  # more than a listing page of retained markers
            await runtime.memos.write_terminal_marker(f"late-{i}", clock.now_ms())
        report = await runtime.sweep_now()
        assert report.listed == 5 and report.runs_cleared == 5


async def test_a_later_end_of_a_retried_run_keeps_its_outcome(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, remember, memo_retention=RETENTION)
        await runtime.submit(RunSpec(input=b"fail", run_id="reused"))
        await run_all(runtime)
        first_end = clock.now_ms()
        clock.advance(RETENTION)
        assert await runtime.retry("reused")
        assert await runtime.sweep_now() == SweepReport(0, 0, 0)  # retry dropped the marker
        await run_all(runtime)
        # A marker of the first end left behind (as by a crash in the middle of `retry`).
        await runtime.memos.write_terminal_marker("reused", first_end)
        clock.advance(1)
        report = await runtime.sweep_now()
        assert report.runs_cleared == 1  # the first end's marker
        status = await runtime.status("reused")
        assert status is not None and status.state is RunState.FAILED  # the second end's
        outcome = await runtime.outcome("reused")
        assert outcome is not None and outcome.error == "no"
        assert outcome.finished_at_ms == first_end + RETENTION * 1000


async def test_unparseable_marker_names_are_skipped(
    memory_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    memos = MemoStore(memory_store)
    await memory_store.put_blob("workflow-memo/terminals/99999999999999999999_x", b"")
    await memory_store.put_blob("workflow-memo/terminals/zzz", b"")
    with caplog.at_level(logging.WARNING, logger="taquba_workflow"):
        assert await memos.list_expired_terminal_markers(10) == []
    assert "not a terminal marker" in caplog.text


async def test_the_sweeper_runs_at_startup_and_stops_with_the_runtime(
    memory_store: Store, clock: MockClock
) -> None:
    async with opened(memory_store, clock=clock) as queue:
        runtime = Runtime(queue, remember, memo_retention=RETENTION)
        await runtime.submit(RunSpec(input=b"ok", run_id="earlier"))
        await run_all(runtime)
    clock.advance(RETENTION + 1)
    async with opened(memory_store, clock=clock) as queue:  # a fresh process
        runtime = Runtime(
            queue, remember, memo_retention=RETENTION, sweep_interval=0.01, poll_interval=0.05
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            with trio.fail_after(10):
                while await runtime.memos.list_terminal_markers():  # noqa: ASYNC110 - polls the store
                    await trio.sleep(0.01)
            assert await runtime.memos.memo("earlier", 0).get("work") is None
            runtime.shutdown()  # the worker loop ends; the sweeper ends with it (no hang)


async def test_sweep_needs_retention(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        with pytest.raises(taquba.UsageError):
            await Runtime(queue, remember).sweep_now()
