"""The workflow-runs pages in a real browser: cancel a run, then check the page and the store.

Reuses the browser, tokens and screenshot helper of ``test_dashboard_browser`` and the seeded
runs of ``test_dashboard_workflow`` (imported, not copied).
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import trio

import taquba
import taquba_server
from taquba.testing import drain, open_test_queue

pytest.importorskip("taquba_workflow")  # optional: absent in some compatibility rows
sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_dashboard_browser import CHROMIUM, TOKENS, _shot
from test_dashboard_workflow import seeded

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium binary on PATH (Debian: apt-get install chromium); .ci/run installs it",
    ),
    pytest.mark.slow,
]
T = TypeVar("T")


async def test_cancel_a_workflow_run_in_the_browser(tmp_path: pathlib.Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    # A hang bound, not a speed claim: on a loaded 2-core machine a page can take seconds.
    expect.set_options(timeout=30_000)

    from taquba_workflow import RunState, get_run

    async with open_test_queue() as queue, trio.open_nursery() as nursery:
        runtime = await seeded(queue)
        server = taquba_server.Server(queue, port=0, tokens=TOKENS)
        url = await nursery.start(server.serve)
        shots = tmp_path / "screenshots"
        shots.mkdir()
        token = trio.lowlevel.current_trio_token()

        def store(fn: Callable[[], Awaitable[T]]) -> T:
            return trio.from_thread.run(fn, trio_token=token)

        def browse() -> list[str]:
            errors: list[str] = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                try:
                    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                    page.on(
                        "console", lambda m: errors.append(m.text) if m.type == "error" else None
                    )
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.goto(f"{url}/ui/login")
                    page.get_by_label("API token").fill("a-secret")
                    page.get_by_role("button", name="Log in").click()
                    page.get_by_role("link", name="Workflows").click()
                    expect(page.get_by_role("heading", name="Workflow runs")).to_be_visible()
                    page.get_by_role("link", name="active").click()
                    row = page.locator('tr[data-run="order-1"]')
                    expect(row.locator(".state")).to_have_text("running")
                    _shot(page, shots, "workflow-runs", docs=True)
                    row.get_by_role("link", name="order-1").click()
                    expect(page.get_by_role("heading", name="Run order-1")).to_be_visible()
                    expect(page.locator("dl.memos")).to_contain_text("Step 02 entries")
                    _shot(page, shots, "workflow-run", docs=True)

                    page.get_by_role("button", name="Cancel run").click()
                    expect(
                        page.get_by_role("heading", name="Cancel this workflow run?")
                    ).to_be_visible()
                    page.get_by_role("button", name="Yes, cancel this workflow run").click()
                    expect(page.get_by_role("status")).to_have_text(
                        "cancellation of run order-1 requested"
                    )
                    expect(page.locator("dd.state")).to_have_text("cancelling")
                    expect(page.get_by_role("button", name="Cancel run")).to_have_count(1)
                    run = store(lambda: get_run(queue, "workflow", "order-1"))
                    assert run is not None and run.state is RunState.CANCELLING

                    # A runtime processes the control job: the run ends cancelled.
                    store(lambda: drain(queue, "workflow", runtime.process))
                    page.reload()
                    expect(page.locator("dd.state")).to_have_text("cancelled")
                    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
                    _shot(page, shots, "workflow-run-cancelled")
                    page.get_by_role("link", name="workflow", exact=True).click()
                    expect(page.locator('tr[data-run="order-1"] .state')).to_have_text("cancelled")
                finally:
                    browser.close()
            return errors

        try:
            errors = await trio.to_thread.run_sync(browse)
        finally:
            server.shutdown()
        assert errors == []
        run = await get_run(queue, "workflow", "order-1")
        assert run is not None and run.state is RunState.CANCELLED
        jobs = await queue.stats("workflow")
        assert (jobs.pending, jobs.scheduled, jobs.claimed) == (0, 0, 0)
        assert isinstance(queue, taquba.Queue)
        assert {p.name for p in shots.iterdir()} >= {"workflow-runs.png", "workflow-run.png"}
