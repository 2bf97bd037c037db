"""The dashboard's workflow-runs pages over plain HTTP (httpx against a real server)."""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import sys
from typing import Any

import pytest
import trio

import taquba
import taquba_server
from taquba.testing import drain

# The helpers and the `secured` fixture of the dashboard's HTTP tests (not copied).
sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_dashboard_http import client_for, csrf_of, login, secured

__all__ = ["secured"]  # a fixture: imported to be used by name

WORKFLOW = importlib.util.find_spec("taquba_workflow") is not None
needs_workflow = pytest.mark.skipif(
    not WORKFLOW, reason="taquba-workflow is not installed (an optional part of the dashboard)"
)


async def step(step: Any) -> Any:
    """``wait`` memoizes two entries and sleeps on step 1; ``ok`` succeeds; ``fail`` fails."""
    from taquba_workflow import Continue, Fail, Succeed

    what = step.payload.decode()
    if what == "ok":
        return Succeed(b'{"receipt": "r-1"}')
    if what == "fail":
        return Fail("card declined")
    if step.number == 0:
        await step.memo.put("charge", b"ch_1")
        await step.memo.put("email", b"sent")
        return Continue(b"wait", delay=3600)
    return Succeed(b"woke")


async def seeded(queue: taquba.Queue) -> Any:
    """A runtime on ``workflow`` with one sleeping, one succeeded and one failed run."""
    from taquba_workflow import RunSpec, Runtime

    runtime = Runtime(queue, step)
    await runtime.submit(RunSpec(input=b"wait", run_id="order-1", headers={"tenant": "acme"}))
    await runtime.submit(RunSpec(input=b"ok", run_id="order-2"))
    await runtime.submit(RunSpec(input=b"fail", run_id="order-3"))
    await drain(queue, "workflow", runtime.process)
    await queue.enqueue("emails", b"not a workflow")
    return runtime


@needs_workflow
async def test_workflow_pages_render_for_a_read_token(
    secured: taquba_server.Server, queue: taquba.Queue
) -> None:
    await seeded(queue)
    sleeping = await queue.list_jobs("workflow", taquba.JobStatus.SCHEDULED)
    [job] = sleeping.jobs
    async with await client_for(secured) as client:
        await login(client, "p-secret")
        assert 'href="/ui/workflow"' in (await client.get("/ui/")).text
        index = await client.get("/ui/workflow")
        assert index.status_code == 200
        assert "/ui/workflow/runs?name=workflow" in index.text
        assert "name=emails" not in index.text  # a queue without runs is no workflow queue
        active = await client.get("/ui/workflow/runs", params={"name": "workflow"})
        assert active.status_code == 200
        assert "order-1" in active.text and "order-2" not in active.text
        assert "running" in active.text
        assert f'href="/ui/jobs/{job.id}"' in active.text  # the current step's job
        ended = await client.get("/ui/workflow/runs", params={"name": "workflow", "ended": "1"})
        assert ended.status_code == 200
        assert "order-2" in ended.text and "succeeded" in ended.text
        assert "order-3" in ended.text and "card declined" in ended.text
        run = await client.get("/ui/workflow/runs/order-1", params={"name": "workflow"})
        assert run.status_code == 200
        assert "Memo entries" in run.text
        assert "<dt>Step 0</dt><dd>2 entries</dd>" in run.text
        assert f'href="/ui/jobs/{job.id}"' in run.text
        assert "acme" in run.text
        assert "Cancel run" not in run.text  # a read token sees no action
        done = await client.get("/ui/workflow/runs/order-2", params={"name": "workflow"})
        assert done.status_code == 200
        assert "Outcome" in done.text and "r-1" in done.text  # the result, as JSON
        failed = await client.get("/ui/workflow/runs/order-3", params={"name": "workflow"})
        assert "card declined" in failed.text
        missing = await client.get("/ui/workflow/runs/nope", params={"name": "workflow"})
        assert missing.status_code == 404
        bad = await client.get("/ui/workflow/runs/a%20b", params={"name": "workflow"})
        assert bad.status_code == 400
        # A read token may not cancel, even with its CSRF token.
        csrf = csrf_of(run.text)
        refused = await client.post(
            "/ui/actions/cancel-run",
            data={"queue_name": "workflow", "run_id": "order-1", "csrf": csrf, "confirm": "yes"},
        )
        assert refused.status_code == 403
        assert "admin scope" in refused.text


@needs_workflow
async def test_cancel_a_run_needs_admin_csrf_and_ends_the_run(
    secured: taquba_server.Server, queue: taquba.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    from taquba_workflow import RunState

    runtime = await seeded(queue)
    form = {"queue_name": "workflow", "run_id": "order-1"}
    async with await client_for(secured) as client:
        await login(client, "a-secret")
        page = await client.get("/ui/workflow/runs/order-1", params={"name": "workflow"})
        assert "Cancel run" in page.text
        csrf = csrf_of(page.text)
        for bad in ({}, {"csrf": "x"}):
            refused = await client.post(
                "/ui/actions/cancel-run", data={**form, **bad, "confirm": "yes"}
            )
            assert refused.status_code == 403
            assert "CSRF" in refused.text
        confirm = await client.post("/ui/actions/cancel-run", data={**form, "csrf": csrf})
        assert confirm.status_code == 200
        assert "Cancel this workflow run?" in confirm.text
        status = await runtime.status("order-1")
        assert status is not None and status.state is RunState.RUNNING  # nothing done yet
        caplog.set_level(logging.INFO, logger="taquba_server.audit")
        back = "/ui/workflow/runs/order-1?name=workflow"
        done = await client.post(
            "/ui/actions/cancel-run",
            data={**form, "csrf": csrf, "confirm": "yes", "back": back},
        )
        assert done.status_code == 303
        assert done.headers["location"].startswith(back + "&msg=cancellation")
        assert "alice requested the cancellation of workflow run order-1 of workflow" in (
            caplog.text
        )
        shown = await client.get(back)
        assert "cancelling" in shown.text
        # A runtime serving the queue ends the run cancelled.
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            with trio.fail_after(30):
                final = await runtime.wait_finished("order-1")
            runtime.shutdown()
        assert final is not None and final.state is RunState.CANCELLED
        shown = await client.get(back)
        assert "cancelled" in shown.text and "Cancel run" not in shown.text
        # Cancelling an ended run does nothing, and says so.
        again = await client.post(
            "/ui/actions/cancel-run", data={**form, "csrf": csrf, "confirm": "yes"}
        )
        assert again.status_code == 303
        assert "not%20active" in again.headers["location"]
        assert "alice found no active workflow run order-1 of workflow" in caplog.text


@needs_workflow
async def test_garbage_run_records_do_not_break_the_pages(
    secured: taquba_server.Server, queue: taquba.Queue
) -> None:
    await seeded(queue)
    await queue.kv_put(b"workflow/workflow/runs/broken", b"\xc1 not a record")
    await queue.kv_put(b"workflow/workflow/outcomes/broken-too", b"{}")
    await queue.store.put_blob("workflow-memo/outcomes/order-2", b"\xc1 garbage")
    async with await client_for(secured) as client:
        await login(client, "p-secret")
        active = await client.get("/ui/workflow/runs", params={"name": "workflow"})
        assert active.status_code == 200
        assert "order-1" in active.text
        assert "1 undecodable run record(s)" in active.text
        ended = await client.get("/ui/workflow/runs", params={"name": "workflow", "ended": "1"})
        assert ended.status_code == 200
        assert "order-3" in ended.text and "1 undecodable" in ended.text
        broken = await client.get("/ui/workflow/runs/broken", params={"name": "workflow"})
        assert broken.status_code == 500  # an error page, not a crash
        assert "WorkflowDataError" in broken.text
        outcome = await client.get("/ui/workflow/runs/order-2", params={"name": "workflow"})
        assert outcome.status_code == 200  # the summary still shows
        assert "cannot be decoded" in outcome.text


@needs_workflow
async def test_paging_through_runs(secured: taquba_server.Server, queue: taquba.Queue) -> None:
    from taquba_server._dashboard import PAGE_SIZE
    from taquba_workflow import RunSpec, Runtime

    runtime = Runtime(queue, step)
    ids = [f"run-{i:03d}" for i in range(PAGE_SIZE + 3)]
    for run_id in ids:
        await runtime.submit(RunSpec(input=b"wait", run_id=run_id))
    async with await client_for(secured) as client:
        await login(client, "p-secret")
        first = await client.get("/ui/workflow/runs", params={"name": "workflow"})
        assert ids[PAGE_SIZE - 1] in first.text and ids[PAGE_SIZE] not in first.text
        assert f"after={ids[PAGE_SIZE - 1]}" in first.text
        second = await client.get(
            "/ui/workflow/runs", params={"name": "workflow", "after": ids[PAGE_SIZE - 1]}
        )
        assert all(i in second.text for i in ids[PAGE_SIZE:])
        assert ids[0] not in second.text and "Next page" not in second.text


@pytest.mark.skipif(WORKFLOW, reason="checks the dashboard without taquba-workflow")
async def test_without_taquba_workflow_the_pages_are_hidden(
    secured: taquba_server.Server,
) -> None:
    async with await client_for(secured) as client:
        await login(client, "a-secret")
        assert "/ui/workflow" not in (await client.get("/ui/")).text
        assert (await client.get("/ui/workflow")).status_code == 404
