"""Runtime-free operations: `list_runs`, `cancel_run`, `list_memos`, and memo-lookup counts."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest

import taquba
from taquba import JobStatus, MockClock
from taquba_workflow import (
    Cancel,
    Continue,
    Fail,
    InvalidRunId,
    RunPage,
    RunSpec,
    RunState,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
    WorkflowDataError,
    cancel_run,
    get_run,
    list_memos,
    list_runs,
)
from wf_support import jobs_in, opened, run_all


async def ending(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
    """Ends each run as its input says; ``wait`` stays on step 1, sleeping."""
    what = step.payload.decode()
    if what == "ok":
        return Succeed(b"done")
    if what == "fail":
        return Fail("no stock")
    if what == "cancel":
        return Cancel("changed my mind")
    if step.number == 0:
        await step.memo.put("charge", b"ch_1")
        await step.memo.put("email", b"sent")
        return Continue(b"wait", delay=3600)
    return Succeed(b"late")


async def test_active_cancelling_and_ended_runs_are_listed(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, ending)
        for run_id, what in [("a-ok", "ok"), ("b-fail", "fail"), ("c-cancel", "cancel")]:
            await runtime.submit(RunSpec(input=what.encode(), run_id=run_id))
        await run_all(runtime)
        clock.advance(5)
        await runtime.submit(RunSpec(input=b"wait", run_id="d-wait", headers={"who": "me"}))
        await runtime.submit(RunSpec(input=b"wait", run_id="e-wait"))
        await run_all(runtime)  # step 0 of both: now sleeping on step 1
        assert await cancel_run(queue, "workflow", "e-wait") is True

        active = await list_runs(queue, "workflow")
        assert [(r.run_id, r.state, r.step) for r in active.runs] == [
            ("d-wait", RunState.RUNNING, 1),
            ("e-wait", RunState.CANCELLING, 1),
        ]
        assert (active.next_after, active.skipped) == (None, 0)
        d = active.runs[0]
        assert d.submitted_at_ms == clock.now_ms()
        assert (d.finished_at_ms, d.error, d.headers) == (None, None, {"who": "me"})
        scheduled = {j.id for j in await jobs_in(queue, JobStatus.SCHEDULED)}
        assert {r.job_id for r in active.runs} == scheduled  # the sleeping step 1 of each
        # The same as Runtime.status says.
        for summary in active.runs:
            status = await runtime.status(summary.run_id)
            assert status is not None and (status.state, status.step) == (
                summary.state,
                summary.step,
            )

        ended = await list_runs(queue, "workflow", ended=True)
        assert [(r.run_id, r.state, r.step, r.error) for r in ended.runs] == [
            ("a-ok", RunState.SUCCEEDED, 0, None),
            ("b-fail", RunState.FAILED, 0, "no stock"),
            ("c-cancel", RunState.CANCELLED, 0, "changed my mind"),
        ]
        assert all(r.finished_at_ms is not None and r.job_id is None for r in ended.runs)
        assert all(r.submitted_at_ms is None for r in ended.runs)

        await run_all(runtime)  # the control job ends e-wait
        ended = await list_runs(queue, "workflow", ended=True)
        assert [r.run_id for r in ended.runs][-1] == "e-wait"
        assert ended.runs[-1].state is RunState.CANCELLED
        assert [r.run_id for r in (await list_runs(queue, "workflow")).runs] == ["d-wait"]
        # One run, as the listing shows it.
        assert await get_run(queue, "workflow", "d-wait") == active.runs[0]
        assert await get_run(queue, "workflow", "b-fail") == ended.runs[1]
        assert await get_run(queue, "workflow", "nope") is None
        await queue.kv_put(b"workflow/workflow/runs/broken", b"junk")
        with pytest.raises(WorkflowDataError):
            await get_run(queue, "workflow", "broken")
        # Another queue name lists nothing.
        assert await list_runs(queue, "other") == RunPage([], None, 0)


async def test_paging_walks_every_run_once(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, ending)
        ids = [f"run-{i:02d}" for i in range(7)]
        for run_id in ids:
            await runtime.submit(RunSpec(input=b"wait", run_id=run_id))
        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            page = await list_runs(queue, "workflow", after=after, limit=3)
            pages += 1
            seen += [r.run_id for r in page.runs]
            if page.next_after is None:
                break
            after = page.next_after
        assert seen == ids
        assert pages == 3


async def test_garbage_records_are_skipped_counted_and_logged(
    clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, ending)
        await runtime.submit(RunSpec(input=b"ok", run_id="good-1"))
        await run_all(runtime)
        await runtime.submit(RunSpec(input=b"wait", run_id="good-2"))
        await queue.kv_put(b"workflow/workflow/runs/bad-1", b"\xc1 not msgpack")
        await queue.kv_put(b"workflow/workflow/runs/not a run id", b"")
        await queue.kv_put(b"workflow/workflow/outcomes/bad-2", b"{}")
        with caplog.at_level(logging.WARNING, logger="taquba_workflow"):
            active = await list_runs(queue, "workflow")
            ended = await list_runs(queue, "workflow", ended=True)
        assert [r.run_id for r in active.runs] == ["good-2"]
        assert active.skipped == 2
        assert [r.run_id for r in ended.runs] == ["good-1"]
        assert ended.skipped == 1
        warnings = [r for r in caplog.records if "undecodable" in r.getMessage()]
        assert len(warnings) == 2  # once per page, naming the keys
        assert "bad-1" in warnings[0].getMessage()
        # A page of only garbage still moves the cursor on.
        page = await list_runs(queue, "workflow", limit=1)
        assert (page.runs, page.skipped, page.next_after) == ([], 1, "bad-1")
        page = await list_runs(queue, "workflow", after=page.next_after, limit=1)
        assert [r.run_id for r in page.runs] == ["good-2"]


async def test_list_runs_checks_its_arguments(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        with pytest.raises(taquba.UsageError):
            await list_runs(queue, "workflow", limit=0)
        with pytest.raises(taquba.UsageError):
            await list_runs(queue, "")
        with pytest.raises(taquba.UsageError):
            await list_runs(queue, "workflow", after=7)  # type: ignore[arg-type]


async def test_cancel_run_without_a_runtime(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, ending)
        assert await cancel_run(queue, "workflow", "unknown") is False
        await runtime.submit(RunSpec(input=b"ok", run_id="ended"))
        await run_all(runtime)
        assert await cancel_run(queue, "workflow", "ended") is False
        await runtime.submit(RunSpec(input=b"wait", run_id="active"))
        assert await cancel_run(queue, "workflow", "active", clock=clock) is True
        assert await cancel_run(queue, "workflow", "active") is True  # already requested
        control = [j for j in await jobs_in(queue, JobStatus.PENDING) if j.priority == 0]
        assert len(control) == 1  # one request, one control job
        status = await runtime.status("active")
        assert status is not None and status.state is RunState.CANCELLING
        await run_all(runtime)
        status = await runtime.status("active")
        assert status is not None and status.state is RunState.CANCELLED
        with pytest.raises(InvalidRunId):
            await cancel_run(queue, "workflow", "a/b")


async def test_memo_entries_per_step(clock: MockClock) -> None:
    async with opened(clock=clock) as queue:
        runtime = Runtime(queue, ending)
        await runtime.submit(RunSpec(input=b"wait", run_id="m"))
        await runtime.submit(RunSpec(input=b"wait", run_id="m1"))  # a prefix sibling
        assert await list_memos(queue.store, "m") == {}
        await run_all(runtime)
        await runtime.memos.memo("m", 1).put("k", b"v")
        await queue.store.put_blob("workflow-memo/memos/m/x/stray", b"")  # not <step>/<hash>
        assert await list_memos(queue.store, "m") == {0: 2, 1: 1}
        assert await list_memos(queue.store, "m", memo_prefix="elsewhere") == {}
        with pytest.raises(InvalidRunId):
            await list_memos(queue.store, "")


class Counted(taquba.Observer):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, str], int]] = []

    def counted(self, name: str, labels: Mapping[str, str], amount: int) -> None:
        self.events.append((name, dict(labels), amount))


async def test_memo_lookups_count_hits_and_misses(clock: MockClock) -> None:
    async def step(step: Step[bytes]) -> StepOutcome[bytes, bytes]:
        if await step.memo.get("charge") is None:
            await step.memo.put("charge", b"ch_1")
        if step.attempt == 1:
            raise RuntimeError("crash after the charge")
        assert await step.memo.content_get({"op": "x"}) is None
        return Succeed(b"ok")

    observer = Counted()
    async with opened(clock=clock) as queue:
        queue.add_observer(observer)
        runtime = Runtime(queue, step)
        await runtime.submit(RunSpec(input=b"", run_id="r"))
        await run_all(runtime)
        lookups = [e[1] for e in observer.events if e[0] == "workflow_memo_lookups"]
        assert lookups == [
            {"queue": "workflow", "result": "miss"},  # attempt 1
            {"queue": "workflow", "result": "hit"},  # attempt 2: the retry reuses it
            {"queue": "workflow", "result": "miss"},  # content_get
        ]
