"""The dashboard in a real browser: headless Chromium (the system's) driven by Playwright.

A real server on loopback serves a real queue; the browser logs in, clicks through requeue,
requeue-all, purge, cancel, pause and resume, and the test checks what the page shows and
what the store holds afterwards. Every page is saved as a screenshot under the test's tmp dir;
with ``TAQUBA_DOCS_SCREENSHOTS=1`` the main ones are also copied into ``docs/images/``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

import taquba
import taquba_server
from taquba.testing import open_test_queue
from taquba_server import Token

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The layers the cron and webhooks pages show (absent in some compatibility rows).
taquba_webhooks = pytest.importorskip("taquba_webhooks")
pytest.importorskip("taquba_cron")

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium binary on PATH (Debian: apt-get install chromium); .ci/run installs it",
    ),
    pytest.mark.slow,
]

DOCS_IMAGES = Path(__file__).resolve().parents[3] / "docs" / "images"
TOKENS = [
    Token("r-secret", frozenset({"work"}), name="oncall-viewer"),
    Token("a-secret", frozenset({"admin"}), name="alice"),
]
T = TypeVar("T")


def _shot(page: Any, shots: Path, name: str, *, docs: bool = False) -> None:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get("TAQUBA_DOCS_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(exist_ok=True)
        shutil.copy(path, DOCS_IMAGES / f"dashboard-{name}.png")


async def _seed(
    queue: taquba.Queue, clock: taquba.MockClock, dashboard: Any
) -> dict[str, list[str]]:
    """An hour of real traffic on the queue's clock, sampled as the server would."""
    ids: dict[str, list[str]] = {"dead": [], "pending": []}
    await dashboard.sample()
    for step in range(12):
        clock.advance(300)  # five minutes
        for i in range(4 + step % 5 * 3):
            await queue.enqueue("emails", f'{{"to": "user{step}-{i}@example.com"}}'.encode())
        if step % 4 == 0:
            await queue.enqueue("reports", b"\x00\x01binary report\xff", headers={"tenant": "acme"})
        for n in range(2 + step % 3 * 2):
            claim = await queue.claim("emails")
            assert claim is not None
            if step in (3, 8, 11) and n == 0:
                await queue.dead_letter(claim, f"SMTPError: 550 mailbox unavailable ({claim.id})")
                ids["dead"].append(claim.id)
            else:
                await queue.ack(claim)
        await dashboard.sample()
    await taquba_webhooks.disable_endpoint(
        queue, "https://hooks.partner.example", "410 Gone: the endpoint was removed"
    )
    await dashboard.sample()  # the webhooks page appears: the store has an endpoint
    page = await queue.list_jobs("emails", taquba.JobStatus.PENDING)
    ids["pending"] = [j.id for j in page.jobs]
    return ids


async def test_click_through_the_dashboard(tmp_path: Path) -> None:
    config = taquba.QueueConfig(keep_done=7200.0)  # done records kept: purge has work
    clock = taquba.MockClock(int(time.time() * 1000) - 3600_000)
    async with open_test_queue(config=config, clock=clock) as queue, trio.open_nursery() as nursery:
        await _click_through(queue, nursery, tmp_path)


async def _click_through(queue: taquba.Queue, nursery: trio.Nursery, tmp_path: Path) -> None:
    from taquba_cron import Schedule, Scheduler

    scheduler = Scheduler(
        queue,
        [
            Schedule("nightly-report", "0 2 * * *", "reports", tz="Europe/Madrid"),
            Schedule("digest", "*/15 * * * *", "emails", tz="America/New_York"),
        ],
    )
    server = taquba_server.Server(queue, port=0, tokens=TOKENS, cron=scheduler)
    url = await nursery.start(server.serve)
    try:
        await _browse(queue, server, scheduler, url, tmp_path)
    finally:
        server.shutdown()


async def _browse(
    queue: taquba.Queue, server: taquba_server.Server, scheduler: Any, url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    # A hang bound, not a speed claim: on a loaded 2-core machine a page can take seconds.
    expect.set_options(timeout=30_000)

    assert isinstance(queue.clock, taquba.MockClock)
    ids = await _seed(queue, queue.clock, server._app.dashboard)  # pyright: ignore[reportPrivateUsage]
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
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))

                # Log in: the session cookie is HttpOnly, so scripts cannot read it.
                page.goto(f"{url}/ui/")
                expect(page.get_by_role("heading", name="Log in")).to_be_visible()
                _shot(page, shots, "login")
                page.get_by_label("API token").fill("wrong")
                page.get_by_role("button", name="Log in").click()
                expect(page.get_by_role("alert")).to_have_text("unknown token")
                page.get_by_label("API token").fill("a-secret")
                page.get_by_role("button", name="Log in").click()
                expect(page.get_by_role("heading", name="Queues")).to_be_visible()
                assert page.evaluate("document.cookie") == ""
                row = page.locator("tr", has_text="emails")
                expect(row).to_contain_text("3")  # dead
                expect(page.locator("svg.chart").first).to_be_visible()
                _shot(page, shots, "overview", docs=True)

                # Dead letters: requeue one (confirmed).
                row.get_by_role("link", name="3").click()
                expect(page.get_by_role("heading", name="Dead letters of emails")).to_be_visible()
                expect(page.get_by_text("SMTPError: 550").first).to_be_visible()
                _shot(page, shots, "dead", docs=True)
                first = ids["dead"][0]
                page.locator("tr", has_text=first).get_by_role("button", name="Requeue").click()
                expect(page.get_by_role("heading", name="Requeue this dead job?")).to_be_visible()
                _shot(page, shots, "confirm")
                page.get_by_role("button", name="Yes, requeue this dead job").click()
                expect(page.get_by_role("status")).to_have_text(f"requeued {first}")
                job = store(lambda: queue.get_job(first))
                assert job is not None and job.status is taquba.JobStatus.PENDING

                # Requeue all: the confirmation's "No" changes nothing.
                page.get_by_role("button", name="Requeue all").click()
                expect(page.get_by_role("heading", name="Requeue every dead job")).to_be_visible()
                page.get_by_role("link", name="No, go back").click()
                expect(page.get_by_text("2 dead job(s).")).to_be_visible()
                assert store(lambda: queue.stats("emails")).dead == 2
                page.get_by_role("button", name="Requeue all").click()
                expect(page.get_by_role("heading", name="Requeue every dead job")).to_be_visible()
                page.get_by_role("button", name="Yes, requeue every dead job").click()
                expect(page.get_by_role("status")).to_have_text("requeued 2 dead job(s) of emails")
                assert store(lambda: queue.stats("emails")).dead == 0

                # Purge done jobs from the queue page.
                page.goto(f"{url}/ui/queue?name=emails&status=done")
                done = store(lambda: queue.stats("emails")).done
                expect(page.get_by_role("link", name=f"done ({done})")).to_be_visible()
                _shot(page, shots, "queue")
                page.get_by_role("button", name="Purge done jobs").click()
                expect(page.get_by_role("heading", name="Delete every job")).to_be_visible()
                page.get_by_role("button", name="Yes, delete every job").click()
                expect(page.get_by_role("status")).to_have_text(
                    f"purged {done} done job(s) of emails"
                )
                expect(page.get_by_text("No done jobs.")).to_be_visible()
                done_left = store(lambda: queue.list_jobs("emails", taquba.JobStatus.DONE))
                assert done_left.jobs == []

                # One job: payload, headers; cancel it.
                pending = ids["pending"][0]
                page.goto(f"{url}/ui/queue?name=emails&status=pending")
                page.get_by_role("link", name=pending).click()
                expect(page.locator("pre.payload")).to_contain_text('"to": "user')
                _shot(page, shots, "job", docs=True)
                page.get_by_role("button", name="Cancel", exact=True).click()
                expect(page.get_by_role("heading", name="Cancel this job?")).to_be_visible()
                page.get_by_role("button", name="Yes, cancel this job").click()
                expect(page.get_by_role("status")).to_have_text(f"cancel {pending}: removed")
                expect(page.get_by_role("link", name=pending)).to_have_count(0)
                cancelled = store(lambda: queue.get_job(pending))
                assert cancelled is None or cancelled.status is not taquba.JobStatus.PENDING

                # A binary payload shows as hex.
                page.goto(f"{url}/ui/queue?name=reports")
                page.locator("td a").first.click()
                expect(page.locator("pre.payload")).to_contain_text("00000000  00 01 62 69")
                expect(page.get_by_text("tenant")).to_be_visible()

                # Cron: pause, then resume.
                page.get_by_role("link", name="Cron").click()
                nightly = page.locator("#schedule-nightly-report")
                expect(nightly).to_contain_text("02:00 CET (+0100)")  # next firings in Madrid time
                nightly.get_by_role("button", name="Pause").click()
                expect(page.get_by_role("heading", name="Pause this cron")).to_be_visible()
                page.get_by_role("button", name="Yes, pause this cron schedule").click()
                expect(page.locator("#schedule-nightly-report .state")).to_have_text("paused")
                assert store(lambda: scheduler.status("nightly-report")).paused
                _shot(page, shots, "cron", docs=True)
                page.locator("#schedule-nightly-report").get_by_role(
                    "button", name="Resume"
                ).click()
                expect(page.get_by_role("heading", name="Resume this cron")).to_be_visible()
                page.get_by_role("button", name="Yes, resume this cron schedule").click()
                expect(page.locator("#schedule-nightly-report .state")).to_have_text("active")
                assert not store(lambda: scheduler.status("nightly-report")).paused

                # Webhooks: enable the endpoint an operator had disabled.
                page.get_by_role("link", name="Webhooks").click()
                hook = page.locator('tr[data-endpoint="https://hooks.partner.example"]')
                expect(hook.locator(".state")).to_have_text("disabled")
                expect(page.get_by_text("410 Gone: the endpoint was removed")).to_be_visible()
                _shot(page, shots, "webhooks", docs=True)
                hook.get_by_role("button", name="Enable").click()
                page.get_by_role("button", name="Yes, enable this webhook endpoint again").click()
                expect(page.get_by_role("status")).to_have_text(
                    "enabled https://hooks.partner.example"
                )
                stats = store(
                    lambda: taquba_webhooks.endpoint_stats(queue, "https://hooks.partner.example")
                )
                assert not stats.disabled

                # A read-only login sees no actions.
                viewer = browser.new_context().new_page()
                viewer.goto(f"{url}/ui/login")
                viewer.get_by_label("API token").fill("r-secret")
                viewer.get_by_role("button", name="Log in").click()
                viewer.goto(f"{url}/ui/cron")
                expect(viewer.get_by_text("oncall-viewer (work)")).to_be_visible()
                expect(viewer.get_by_role("button", name="Pause")).to_have_count(0)

                # On a phone.
                phone = browser.new_context(
                    viewport={"width": 390, "height": 844}, device_scale_factor=2
                )
                mobile = phone.new_page()
                mobile.goto(f"{url}/ui/login")
                mobile.get_by_label("API token").fill("a-secret")
                mobile.get_by_role("button", name="Log in").click()
                expect(mobile.get_by_role("heading", name="Queues")).to_be_visible()
                width = mobile.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, f"the page scrolls sideways on a phone: {width}px"
                _shot(mobile, shots, "phone", docs=True)
            finally:
                browser.close()
        return errors

    errors = await trio.to_thread.run_sync(browse)
    # No script errors, no CSP violations, no missing resources; the one 401 is the wrong token.
    unexpected = [e for e in errors if "status of 401" not in e]
    assert unexpected == [], errors
    assert {p.name for p in shots.iterdir()} >= {"overview.png", "dead.png", "job.png", "cron.png"}
