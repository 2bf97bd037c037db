"""The dashboard over plain HTTP (httpx against a real server): pages, auth, scopes, CSRF."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import trio
import trio.testing

import taquba
import taquba.testing
import taquba_server
from taquba_server import Token
from taquba_server._session import COOKIE_NAME, SessionSigner

TOKENS = [
    Token("p-secret", frozenset({"produce"}), name="producer"),
    Token("w-secret", frozenset({"work"}), name="worker"),
    Token("a-secret", frozenset({"admin"}), name="alice"),
    Token("m-secret", frozenset({"metrics"}), name="prometheus"),
]


async def make_dead(
    queue: taquba.Queue, queue_name: str, n: int, reason: str = "boom"
) -> list[str]:
    """Enqueue ``n`` jobs and dead-letter them; returns their ids."""
    ids = [(await queue.enqueue(queue_name, f"job {i}".encode())).id for i in range(n)]
    for _ in range(n):
        claim = await queue.claim(queue_name)
        assert claim is not None
        await queue.dead_letter(claim, f"{reason}: {claim.id}")
    return ids


@pytest.fixture
async def secured(
    queue: taquba.Queue, nursery: trio.Nursery
) -> AsyncIterator[taquba_server.Server]:
    server = taquba_server.Server(queue, port=0, tokens=TOKENS, shutdown_grace=5.0)
    await nursery.start(server.serve)
    yield server
    server.shutdown()


async def client_for(server: taquba_server.Server) -> httpx.AsyncClient:
    assert server.url is not None
    return httpx.AsyncClient(base_url=server.url, timeout=30)


async def login(client: httpx.AsyncClient, secret: str) -> None:
    response = await client.post("/ui/login", data={"token": secret, "next": "/ui/"})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/"
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    assert "path=/ui" in cookie.lower()
    assert secret not in cookie


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def test_pages_need_a_login_and_refuse_unknown_tokens(
    secured: taquba_server.Server, queue: taquba.Queue
) -> None:
    await queue.enqueue("emails", b"hi")
    async with await client_for(secured) as client:
        for path in ("/ui/", "/ui/queue?name=emails", "/ui/dead?name=emails", "/ui/cron"):
            response = await client.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/ui/login?next=")
        page = await client.get("/ui/login")
        assert page.status_code == 200
        assert 'type="password"' in page.text
        refused = await client.post("/ui/login", data={"token": "nope"})
        assert refused.status_code == 401
        assert "unknown token" in refused.text
        assert COOKIE_NAME not in client.cookies
        # A metrics-only token scrapes /metrics; it does not read payloads on the dashboard.
        scraper = await client.post("/ui/login", data={"token": "m-secret"})
        assert scraper.status_code == 403
        assert "may not read queues" in scraper.text
        assert COOKIE_NAME not in client.cookies
        # A forged cookie is no login.
        client.cookies.set(COOKIE_NAME, "e30.AAAA", path="/ui")
        assert (await client.get("/ui/")).status_code == 303
        # A login posted from another site (login CSRF) is refused.
        client.cookies.clear()
        cross = await client.post(
            "/ui/login", data={"token": "a-secret"}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403
        assert COOKIE_NAME not in client.cookies
        # The redirect target after a login stays inside the dashboard.
        evil = await client.post("/ui/login", data={"token": "a-secret", "next": "//evil.test/"})
        assert evil.headers["location"] == "/ui/"


async def test_every_page_renders_for_a_read_only_token(
    secured: taquba_server.Server, queue: taquba.Queue
) -> None:
    dead = await make_dead(queue, "emails", 2)
    pending = (
        await queue.enqueue("emails", b'{"to": "a@b.c"}', headers={"trace": "t-1"}, max_attempts=3)
    ).id
    binary = (await queue.enqueue("emails", bytes(range(256)) * 100)).id
    async with await client_for(secured) as client:
        await login(client, "p-secret")
        overview = await client.get("/ui/")
        assert overview.status_code == 200
        assert "emails" in overview.text
        assert "<svg" in overview.text
        assert overview.headers["content-security-policy"].startswith("default-src 'none'")
        assert "producer (produce)" in overview.text
        # The htmx partial: the overview section only.
        partial = await client.get("/ui/", headers={"HX-Request": "true"})
        assert partial.text.lstrip().startswith("<section")
        jobs = await client.get("/ui/queue", params={"name": "emails", "status": "pending"})
        assert pending in jobs.text and binary in jobs.text
        assert "dead (2)" in jobs.text
        dead_page = await client.get("/ui/dead", params={"name": "emails"})
        assert all(job_id in dead_page.text for job_id in dead)
        assert "boom" in dead_page.text
        # Read-only: no action buttons.
        assert "/ui/actions/" not in dead_page.text
        job = await client.get(f"/ui/jobs/{pending}")
        assert job.status_code == 200
        assert "&#34;to&#34;: &#34;a@b.c&#34;" in job.text  # pretty JSON, escaped
        assert "trace" in job.text and "t-1" in job.text
        assert "1 of 3" in job.text or "0 of 3" in job.text
        assert "No attempt has ended yet." in job.text
        dead_job = await client.get(f"/ui/jobs/{dead[0]}")
        assert "History <small>(1)</small>" in dead_job.text
        assert "dead_lettered" in dead_job.text and f"boom: {dead[0]}" in dead_job.text
        hexed = await client.get(f"/ui/jobs/{binary}")
        assert 'data-view="hex"' in hexed.text
        assert "00000000  00 01 02 03" in hexed.text
        assert "Showing the first 16384 bytes" in hexed.text
        as_text = await client.get(f"/ui/jobs/{pending}", params={"view": "hex"})
        assert 'data-view="hex"' in as_text.text
        assert (await client.get("/ui/jobs/nosuchjob")).status_code == 404
        assert (
            await client.get("/ui/queue", params={"name": "e", "status": "x"})
        ).status_code == 400
        assert (await client.get("/ui/queue", params={"name": ""})).status_code == 400
        assert (await client.get("/ui/cron")).status_code == 404  # no scheduler configured
        assert "/ui/cron" not in overview.text
        static = await client.get("/ui/static/htmx.min.js")
        assert static.status_code == 200 and static.headers["content-type"].startswith(
            "text/javascript"
        )
        assert (await client.get("/ui/static/../_app.py")).status_code == 404


async def test_paging_through_a_status(secured: taquba_server.Server, queue: taquba.Queue) -> None:
    ids = {(await queue.enqueue("bulk", b"x")).id for _ in range(60)}
    seen: set[str] = set()
    async with await client_for(secured) as client:
        await login(client, "w-secret")
        url = "/ui/queue?name=bulk&status=pending"
        while url:
            page = await client.get(url)
            seen |= set(re.findall(r"/ui/jobs/([^\"]+)\"", page.text))
            found = re.search(r'href="(/ui/queue\?[^"]*cursor=[^"]+)"', page.text)
            url = found.group(1).replace("&amp;", "&") if found else ""
    assert seen == ids


async def test_actions_need_admin_and_csrf(
    secured: taquba_server.Server, queue: taquba.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    dead = await make_dead(queue, "emails", 3)
    async with await client_for(secured) as reader:
        await login(reader, "w-secret")
        csrf = csrf_of((await reader.get("/ui/")).text)  # the logout form carries it
        refused = await reader.post(
            "/ui/actions/requeue", data={"job_id": dead[0], "csrf": csrf, "confirm": "yes"}
        )
        assert refused.status_code == 403
        assert "admin scope" in refused.text
    async with await client_for(secured) as client:
        await login(client, "a-secret")
        page = (await client.get("/ui/dead", params={"name": "emails"})).text
        csrf = csrf_of(page)
        async with await client_for(secured) as other:
            await login(other, "a-secret")
            others = csrf_of((await other.get("/ui/")).text)
        assert others != csrf
        # No token, a wrong token, another session's token: refused, nothing changes.
        for bad in (None, "x", others):
            data = {"job_id": dead[0], "confirm": "yes"}
            if bad is not None:
                data["csrf"] = bad
            response = await client.post("/ui/actions/requeue", data=data)
            assert response.status_code == 403
            assert "CSRF" in response.text
        assert (await queue.stats("emails")).dead == 3
        # Without confirm=yes: a confirmation page, nothing done yet.
        confirm = await client.post(
            "/ui/actions/requeue",
            data={"job_id": dead[0], "csrf": csrf, "back": "/ui/dead?name=emails"},
        )
        assert confirm.status_code == 200
        assert "Requeue this dead job?" in confirm.text
        assert 'name="confirm" value="yes"' in confirm.text
        assert (await queue.stats("emails")).dead == 3
        # Confirmed: done, audited, back to the page with a message.
        caplog.set_level(logging.INFO, logger="taquba_server.audit")
        done = await client.post(
            "/ui/actions/requeue",
            data={
                "job_id": dead[0],
                "csrf": csrf,
                "back": "/ui/dead?name=emails",
                "confirm": "yes",
            },
        )
        assert done.status_code == 303
        assert done.headers["location"].startswith("/ui/dead?name=emails&msg=requeued")
        job = await queue.get_job(dead[0])
        assert job is not None and job.status is taquba.JobStatus.PENDING
        assert f"alice requeued dead job {dead[0]} of emails" in caplog.text
        # Requeue all, then purge.
        await make_dead(queue, "emails", 1)
        done = await client.post(
            "/ui/actions/requeue-all",
            data={"queue_name": "emails", "csrf": csrf, "confirm": "yes"},
        )
        assert done.status_code == 303
        assert "requeued%203%20dead" in done.headers["location"]
        assert (await queue.stats("emails")).dead == 0
        assert "alice requeued 3 dead job(s) of emails" in caplog.text
        await make_dead(queue, "emails", 2)
        done = await client.post(
            "/ui/actions/purge",
            data={"queue_name": "emails", "status": "dead", "csrf": csrf, "confirm": "yes"},
        )
        assert done.status_code == 303
        assert (await queue.stats("emails")).dead == 0
        assert "alice purged 2 dead job(s) of emails" in caplog.text
        bad_status = await client.post(
            "/ui/actions/purge",
            data={"queue_name": "emails", "status": "pending", "csrf": csrf, "confirm": "yes"},
        )
        assert bad_status.status_code == 400
        # Cancel a pending job.
        pending = (await queue.enqueue("emails", b"later")).id
        done = await client.post(
            "/ui/actions/cancel", data={"job_id": pending, "csrf": csrf, "confirm": "yes"}
        )
        assert done.status_code == 303
        assert await queue.get_job(pending) is None or (
            (await queue.get_job(pending)).status is taquba.JobStatus.DEAD  # type: ignore[union-attr]
        )
        assert f"alice cancelled job {pending}" in caplog.text
        # An outside "back" is replaced by the dashboard's home.
        done = await client.post(
            "/ui/actions/requeue-all",
            data={"queue_name": "emails", "csrf": csrf, "confirm": "yes", "back": "https://x/"},
        )
        assert done.headers["location"].startswith("/ui/?msg=")
        # Logout: CSRF-checked, the cookie goes.
        assert (await client.post("/ui/logout")).status_code == 403
        out = await client.post("/ui/logout", data={"csrf": csrf})
        assert out.status_code == 303
        assert COOKIE_NAME not in client.cookies
        assert (await client.get("/ui/")).status_code == 303


async def test_a_removed_token_ends_its_sessions() -> None:
    signer = SessionSigner(TOKENS)
    cookie = signer.issue(TOKENS[2])
    session = signer.verify(cookie)
    assert session is not None and session.admin and session.who == "alice"
    assert SessionSigner(TOKENS).verify(cookie) is None  # another key (a restart)
    assert signer.verify(cookie, now=datetime.now(UTC).timestamp() + 13 * 3600) is None
    other = SessionSigner(TOKENS[:2])
    assert other.verify(other.issue(TOKENS[2])) is None
    assert signer.check_csrf(session, signer.csrf_token(session))
    assert not signer.check_csrf(session, "")


async def test_open_mode_on_loopback(server: taquba_server.Server, queue: taquba.Queue) -> None:
    """No tokens (loopback only): every browser is an anonymous admin, CSRF still applies."""
    dead = await make_dead(queue, "q", 1)
    assert server.url is not None
    async with httpx.AsyncClient(base_url=server.url) as client:
        page = await client.get("/ui/dead", params={"name": "q"})
        assert page.status_code == 200
        assert COOKIE_NAME in client.cookies
        assert "/ui/actions/requeue" in page.text
        refused = await client.post(
            "/ui/actions/requeue", data={"job_id": dead[0], "confirm": "yes"}
        )
        assert refused.status_code == 403
        done = await client.post(
            "/ui/actions/requeue",
            data={"job_id": dead[0], "csrf": csrf_of(page.text), "confirm": "yes"},
        )
        assert done.status_code == 303
    assert (await queue.stats("q")).dead == 0


async def test_dashboard_can_be_turned_off(queue: taquba.Queue, nursery: trio.Nursery) -> None:
    server = taquba_server.Server(queue, port=0, dashboard=False)
    url = await nursery.start(server.serve)
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/ui/")).status_code == 404
        assert (await client.get("/v1/health")).status_code == 200
    server.shutdown()
    with pytest.raises(taquba.UsageError):
        taquba_server.create_app(queue, dashboard=False, cron=object())  # type: ignore[arg-type]


async def test_storage_errors_show_a_503_page() -> None:
    """A queue that stopped under the app: the pages answer 503 with the error, no traceback."""
    async with taquba.testing.open_test_queue() as queue:
        await queue.enqueue("q", b"x")
        app = taquba_server.create_app(queue)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        page = await client.get("/ui/")
        assert page.status_code == 503
        assert "QueueClosed" in page.text
        job = await client.get("/ui/queue", params={"name": "q"})
        assert job.status_code == 503


async def test_webhook_endpoints_page_and_actions(
    secured: taquba_server.Server, queue: taquba.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    taquba_webhooks = pytest.importorskip("taquba_webhooks")

    async with await client_for(secured) as client:
        await login(client, "a-secret")
        # Installed but unused: no nav entry, an empty page.
        assert "/ui/webhooks" not in (await client.get("/ui/")).text
        assert "No webhook endpoint" in (await client.get("/ui/webhooks")).text
        await taquba_webhooks.disable_endpoint(queue, "https://gone.example.com", "410 Gone")
        page = await client.get("/ui/webhooks")
        assert "https://gone.example.com" in page.text
        assert "disabled" in page.text and "410 Gone" in page.text
        assert 'href="/ui/webhooks"' in page.text  # in the nav from now on
        csrf = csrf_of(page.text)
        caplog.set_level(logging.INFO, logger="taquba_server.audit")
        for bad in ("https://Gone.example.com/path", "ftp://x", ""):
            refused = await client.post(
                "/ui/actions/enable-endpoint",
                data={"endpoint": bad, "csrf": csrf, "confirm": "yes"},
            )
            assert refused.status_code == 400
        done = await client.post(
            "/ui/actions/enable-endpoint",
            data={"endpoint": "https://gone.example.com", "csrf": csrf, "confirm": "yes"},
        )
        assert done.status_code == 303
        stats = await taquba_webhooks.endpoint_stats(queue, "https://gone.example.com")
        assert not stats.disabled
        assert "alice enabled webhook endpoint https://gone.example.com" in caplog.text
        done = await client.post(
            "/ui/actions/disable-endpoint",
            data={"endpoint": "https://gone.example.com", "csrf": csrf, "confirm": "yes"},
        )
        assert done.status_code == 303
        stats = await taquba_webhooks.endpoint_stats(queue, "https://gone.example.com")
        assert stats.disabled and stats.disabled_reason == "disabled by alice from the dashboard"
    async with await client_for(secured) as reader:
        await login(reader, "p-secret")
        page = await reader.get("/ui/webhooks")
        assert "https://gone.example.com" in page.text
        assert "/ui/actions/" not in page.text


async def test_the_server_samples_in_the_background(
    secured: taquba_server.Server, queue: taquba.Queue
) -> None:
    await queue.enqueue("q", b"x")
    dashboard = secured._app.dashboard  # pyright: ignore[reportPrivateUsage]
    assert dashboard is not None
    await trio.testing.wait_all_tasks_blocked()
    assert len(dashboard.samples) >= 1  # the first sample is taken when serving starts


async def test_a_failing_sample_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with taquba.testing.open_test_queue() as queue:
        await queue.enqueue("q", b"x")
        app = taquba_server.create_app(queue)
    dashboard = app.dashboard  # type: ignore[attr-defined]
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dashboard.run_sampler)
            await trio.testing.wait_all_tasks_blocked()  # it sampled, failed, and sleeps
            scope.cancel()
    assert len(dashboard.samples) == 0
    assert caplog.text.count("dashboard sample skipped: QueueClosed") == 1


def test_payload_preview_and_charts() -> None:
    from taquba_server._ui_format import PAYLOAD_PREVIEW, preview, spark

    assert preview(b'{"a": [1, 2]}', "auto") == (
        "json",
        '{\n  "a": [\n    1,\n    2\n  ]\n}',
        False,
    )
    assert preview(b'{"a": 1}', "text") == ("text", '{"a": 1}', False)
    assert preview(b"not json", "json") == ("text", "not json", False)
    assert preview("é\n".encode(), "auto") == ("text", "é\n", False)
    view, text, truncated = preview(b"\x00\xff", "auto")
    assert (view, truncated) == ("hex", False)
    assert text == "00000000  00 ff" + " " * 44 + ".."
    # Over the cap: not parsed as JSON, cut at the cap, even inside a UTF-8 sequence.
    big = b'["' + "é".encode() * PAYLOAD_PREVIEW + b'"]'
    view, text, truncated = preview(big, "json")
    assert view == "text" and truncated and len(text.encode()) <= PAYLOAD_PREVIEW
    chart = spark([(0.0, 0.0), (50.0, 10.0), (100.0, 5.0)], 0.0, 100.0)
    assert chart["points"] == "0.0,30.0 60.0,2.0 120.0,16.0"
    assert chart["peak"] == 10.0 and chart["last"] == 5.0
    assert chart["area"].startswith("0.0,32.0 ") and chart["area"].endswith(" 120.0,32.0")
    assert spark([], 0.0, 1.0)["points"] == ""


async def test_the_dead_letter_page_pages_with_a_cursor(
    server: taquba_server.Server, queue: taquba.Queue
) -> None:
    dead = await make_dead(queue, "q", 53)
    assert server.url is not None
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = await client.get("/ui/dead", params={"name": "q"})
        assert first.status_code == 200
        link = re.search(r'href="/ui/dead\?name=q&amp;cursor=([^"]+)">Next page', first.text)
        assert link is not None
        second = await client.get(f"/ui/dead?name=q&cursor={link.group(1)}")
        assert second.status_code == 200
        assert "Next page" not in second.text
        shown = [job_id for job_id in dead if job_id in first.text or job_id in second.text]
        assert shown == dead
        assert not any(job_id in first.text for job_id in dead if job_id in second.text)
