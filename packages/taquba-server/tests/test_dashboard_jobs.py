"""The dashboard's "Job results" pages over plain HTTP (httpx against a real server).

Skipped without taquba-jobs: the compatibility rows install only the server's own
dependencies, and the pages then answer 404 (there is no navigation link to them).
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

import taquba
import taquba_server
from taquba_server import Token

taquba_jobs = pytest.importorskip("taquba_jobs")
from taquba_jobs._records import ResultRecord, encode_result  # noqa: E402

TOKENS = [
    Token("p-secret", frozenset({"produce"}), name="producer"),
    Token("a-secret", frozenset({"admin"}), name="alice"),
]
PREFIX = taquba_jobs.DEFAULT_RESULT_PREFIX


async def resize(ctx: taquba_jobs.JobContext, path: str) -> dict[str, object]:
    if path.endswith(".bmp"):
        raise taquba.PermanentFailure(f"unsupported format: {path}")
    return {"path": f"thumbs/{path}", "bytes_written": 2560}


RESIZE = taquba_jobs.Job(resize, name="thumbnails.resize", max_attempts=1)


@pytest.fixture
async def secured(
    queue: taquba.Queue, nursery: trio.Nursery
) -> AsyncIterator[taquba_server.Server]:
    server = taquba_server.Server(queue, port=0, tokens=TOKENS, shutdown_grace=5.0)
    await nursery.start(server.serve)
    yield server
    server.shutdown()


@contextlib.asynccontextmanager
async def logged_in(server: taquba_server.Server, secret: str) -> AsyncIterator[httpx.AsyncClient]:
    assert server.url is not None
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        response = await client.post("/ui/login", data={"token": secret, "next": "/ui/"})
        assert response.status_code == 303, response.text
        yield client


async def run_jobs(queue: taquba.Queue, paths: list[str]) -> list[str]:
    """Run ``paths`` through a real runner until each has its outcome; returns the job ids."""
    runner = taquba_jobs.JobRunner(queue, [RESIZE], poll_interval=0.05)
    handles = [await runner.submit(RESIZE, path) for path in paths]
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.serve)
        for handle in handles:
            with trio.fail_after(30), contextlib.suppress(taquba_jobs.JobFailed):
                await handle.result()
        runner.shutdown()
    return [handle.job_id for handle in handles]


def stored(job_id: str, n: int = 0) -> bytes:
    """A succeeded result record, as a runner writes it."""
    return encode_result(
        ResultRecord(job_id, "reports.build", "succeeded", b"\xa2ok", None, None, False, 1, n)
    )


async def test_the_pages_render_for_a_read_token(
    secured: taquba_server.Server, queue: taquba.Queue
) -> None:
    ok, bad = await run_jobs(queue, ["cat.png", "scan.bmp"])
    # A job still in the queue (its outcome stored before its settlement): linked from its page.
    waiting = (await queue.enqueue("jobs", b"", headers={"taquba_jobs.job": "reports.build"})).id
    await queue.store.put_blob(f"{PREFIX}/{waiting}", stored(waiting))
    async with logged_in(secured, "p-secret") as client:
        home = await client.get("/ui/")
        assert 'href="/ui/results">Job results</a>' in home.text
        page = await client.get("/ui/results")
        assert page.status_code == 200
        for text in (ok, bad, waiting, "thumbnails.resize", "succeeded", "failed"):
            assert text in page.text
        assert "taquba.PermanentFailure: unsupported format: scan.bmp" in page.text
        assert 'href="/ui/queue?name=jobs"' in page.text  # pending and running jobs live there
        assert "Next page" not in page.text

        one = await client.get(f"/ui/results/{ok}")
        assert one.status_code == 200
        # The MessagePack output, shown as JSON.
        assert '"path": "thumbs/cat.png"' in html.unescape(one.text)
        assert 'data-view="json"' in one.text
        assert "no longer in the queue" in one.text  # acked after its outcome was stored
        hexed = await client.get(f"/ui/results/{ok}?view=hex")
        assert 'data-view="hex"' in hexed.text
        assert "00000000  82" in hexed.text  # a two-entry map
        failed = await client.get(f"/ui/results/{bad}")
        assert "unsupported format: scan.bmp" in failed.text
        assert "Output" not in failed.text
        linked = await client.get(f"/ui/results/{waiting}")
        assert f'href="/ui/jobs/{waiting}">jobs: pending</a>' in linked.text
        assert (await client.get(f"/ui/results/{ok}?view=xml")).status_code == 400
    async with httpx.AsyncClient(base_url=secured.url or "", timeout=30) as anonymous:
        refused = await anonymous.get("/ui/results")
        assert refused.status_code == 303
        assert refused.headers["location"].startswith("/ui/login?next=")


async def test_paging(secured: taquba_server.Server, queue: taquba.Queue) -> None:
    ids = [f"01K{n:023d}" for n in range(60)]
    for n, job_id in enumerate(ids):
        await queue.store.put_blob(f"{PREFIX}/{job_id}", stored(job_id, n))
    async with logged_in(secured, "p-secret") as client:
        first = await client.get("/ui/results")
        assert first.text.count('<tr data-job="') == 50
        assert ids[0] in first.text and ids[49] in first.text and ids[50] not in first.text
        assert f'href="/ui/results?after={ids[49]}">Next page</a>' in first.text
        second = await client.get(f"/ui/results?after={ids[49]}")
        assert second.text.count('<tr data-job="') == 10
        assert ids[50] in second.text and ids[59] in second.text
        assert "Next page" not in second.text
        assert "First page" in second.text
        assert (await client.get("/ui/results?after=../x")).status_code == 400


async def test_a_garbage_result_blob_does_not_break_the_pages(
    secured: taquba_server.Server, queue: taquba.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    (ok,) = await run_jobs(queue, ["cat.png"])
    garbage = "01JGARBAGE0000000000000000"
    await queue.store.put_blob(f"{PREFIX}/{garbage}", b"\xc1 not a result record")
    async with logged_in(secured, "a-secret") as client:
        page = await client.get("/ui/results")
        assert page.status_code == 200
        assert ok in page.text
        assert garbage not in page.text
        assert "1 stored record(s) on this page do not decode" in page.text
        one = await client.get(f"/ui/results/{garbage}")
        assert one.status_code == 500
        assert f"the stored result of job {garbage} does not decode" in one.text
        assert "<header>" in one.text  # the dashboard's error page, not a bare failure


async def test_a_missing_result_is_a_404_page(
    secured: taquba_server.Server, queue: taquba.Queue
) -> None:
    pending = (await queue.enqueue("jobs", b"")).id
    async with logged_in(secured, "p-secret") as client:
        for job_id in (pending, "01JNOSUCHJOB00000000000000"):
            missing = await client.get(f"/ui/results/{job_id}")
            assert missing.status_code == 404
            assert f"no stored result for job {job_id}" in missing.text
            assert "<header>" in missing.text
        assert (await client.get("/ui/results/bad.id")).status_code == 400
        empty = await client.get("/ui/results")
        assert "No stored results." in empty.text


async def test_another_result_prefix(queue: taquba.Queue, nursery: trio.Nursery) -> None:
    job_id = "01JOTHERPREFIX000000000000"
    await queue.store.put_blob(f"emails-results/{job_id}", stored(job_id))
    server = taquba_server.Server(
        queue, port=0, tokens=TOKENS, shutdown_grace=5.0, jobs_result_prefix="emails-results"
    )
    await nursery.start(server.serve)
    try:
        async with logged_in(server, "p-secret") as client:
            page = await client.get("/ui/results")
            assert job_id in page.text
            assert "emails-results/" in page.text
            assert (await client.get(f"/ui/results/{job_id}")).status_code == 200
    finally:
        server.shutdown()
    with pytest.raises(taquba.UsageError):
        taquba_server.create_app(queue, jobs_result_prefix="/")


def test_the_command_takes_a_result_prefix() -> None:
    from taquba_server._cli import _parser  # pyright: ignore[reportPrivateUsage]

    args = _parser().parse_args(["--store", "memory://", "--jobs-result-prefix", "emails-results"])
    assert args.jobs_result_prefix == "emails-results"
    assert _parser().parse_args(["--store", "memory://"]).jobs_result_prefix is None
