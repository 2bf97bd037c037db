"""The "Job results" pages in a real browser (headless Chromium driven by Playwright).

Reuses the browser helpers of ``test_dashboard_browser.py`` (the chromium binary, the tokens,
the screenshots, saved under the test's tmp dir and, with ``TAQUBA_DOCS_SCREENSHOTS=1``, into
``docs/images/``). The test modules are not a package (pytest's importlib mode), so that module
is loaded from its file.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import trio

import taquba
import taquba_server
from taquba.testing import open_test_queue

taquba_jobs = pytest.importorskip("taquba_jobs")


def _browser_helpers() -> Any:
    path = Path(__file__).with_name("test_dashboard_browser.py")
    spec = importlib.util.spec_from_file_location("_taquba_server_browser_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = _browser_helpers()
pytestmark = helpers.pytestmark  # no chromium: skipped; slow


async def resize(ctx: taquba_jobs.JobContext, path: str) -> dict[str, object]:
    if path.endswith(".bmp"):
        raise taquba.PermanentFailure(f"unsupported format: {path}")
    return {"path": f"thumbs/256/{path}", "bytes_written": 2560, "format": "png"}


RESIZE = taquba_jobs.Job(resize, name="thumbnails.resize", max_attempts=1)


async def test_browse_the_job_results(tmp_path: Path) -> None:
    async with open_test_queue() as queue, trio.open_nursery() as nursery:
        runner = taquba_jobs.JobRunner(queue, [RESIZE], poll_interval=0.05)
        handles = [await runner.submit(RESIZE, path) for path in ("cat.png", "dog.png", "scan.bmp")]
        await nursery.start(runner.serve)
        for handle in handles:
            with trio.fail_after(30), contextlib.suppress(taquba_jobs.JobFailed):
                await handle.result()
        runner.shutdown()
        await queue.enqueue("jobs", b"", headers={"taquba_jobs.job": "thumbnails.resize"})
        server = taquba_server.Server(queue, port=0, tokens=helpers.TOKENS)
        url = await nursery.start(server.serve)
        try:
            ids = [handle.job_id for handle in handles]
            errors = await trio.to_thread.run_sync(_browse, url, ids, tmp_path)
        finally:
            server.shutdown()
    assert errors == []


def _browse(url: str, ids: list[str], tmp_path: Path) -> list[str]:
    from playwright.sync_api import expect, sync_playwright

    # A hang bound, not a speed claim: on a loaded 2-core machine a page can take seconds.
    expect.set_options(timeout=30_000)

    shots = tmp_path / "screenshots"
    shots.mkdir()
    cat, _dog, scan = ids
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=helpers.CHROMIUM)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/ui/login")
            page.get_by_label("API token").fill("r-secret")  # a read-only token
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Queues")).to_be_visible()

            # The list: every outcome, oldest first, and the queue pending jobs live on.
            page.get_by_role("link", name="Job results").click()
            expect(page.get_by_role("heading", name="Job results")).to_be_visible()
            rows = page.locator("tr[data-job]")
            expect(rows).to_have_count(3)
            expect(rows.first).to_contain_text(cat)
            failed = page.locator(f'tr[data-job="{scan}"]')
            expect(failed.locator(".outcome")).to_have_text("failed")
            expect(failed).to_contain_text("unsupported format: scan.bmp")
            expect(page.locator(f'tr[data-job="{cat}"] .outcome')).to_have_text("succeeded")
            expect(page.get_by_role("link", name="jobs", exact=True)).to_be_visible()
            helpers._shot(page, shots, "results", docs=True)

            # One result: its output as JSON, then as hex.
            page.get_by_role("link", name=cat).click()
            expect(page.get_by_role("heading", name=f"Result of {cat}")).to_be_visible()
            expect(page.locator("pre.payload")).to_contain_text('"path": "thumbs/256/cat.png"')
            expect(page.get_by_text("no longer in the queue")).to_be_visible()
            helpers._shot(page, shots, "result", docs=True)
            page.get_by_role("link", name="hex").click()
            expect(page.locator("pre.payload")).to_contain_text("00000000  83")

            # The failed one: its error, no output.
            page.get_by_role("link", name="All results").click()
            page.get_by_role("link", name=scan).click()
            expect(page.locator("pre.err")).to_contain_text("unsupported format: scan.bmp")
            expect(page.locator("pre.payload")).to_have_count(0)

            # The queue link: pending taquba-jobs jobs are the queue page's.
            page.get_by_role("link", name="Job results").click()
            page.get_by_role("link", name="jobs", exact=True).click()
            expect(page.get_by_role("heading", name="Queue jobs")).to_be_visible()
        finally:
            browser.close()
    assert {p.name for p in shots.iterdir()} == {"results.png", "result.png"}
    return errors
