"""The approval example (``examples/workflow_approval.py``) runs: real processes, real HTTP.

The server process owns a local-disk store; the tests submit requests and decide them through
its web form (as a browser posts it) and through the example's CLI (a second process posting
to the first), stop it with SIGINT while a request waits and start it again, let a deadline
pass, and send bad input. Every wait is bounded (``trio.fail_after``) only as a hang guard.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from taquba.testing import Child, open_child

EXAMPLE = Path(__file__).parents[3] / "examples" / "workflow_approval.py"
JSON = {"Accept": "application/json"}
HANG = 60  # seconds: a hang guard, not a timing assertion

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT, POSIX child processes")


@asynccontextmanager
async def serving(store: Path, *options: str) -> AsyncGenerator[tuple[Child, str]]:
    """``serve`` on any free port of loopback; yields the process and its URL."""
    async with open_child(EXAMPLE, "serve", "--store", store, "--port", "0", *options) as server:
        with trio.fail_after(HANG):
            line = await server.expect(lambda line: line.startswith("serving http://"))
        yield server, line.split()[1]


async def stop(server: Child) -> None:
    """SIGINT: the documented graceful stop, exit status 0."""
    server.process.send_signal(signal.SIGINT)
    with trio.fail_after(HANG):
        await server.expect_exit(0)
    assert server.lines[-1] == "stopped"


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """The example's client subcommands, in their own process."""
    with trio.fail_after(HANG):
        return await trio.run_process(
            [sys.executable, str(EXAMPLE), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def submit(url: str, request_id: str, title: str, deadline: float = 3600) -> None:
    done = await cli("submit", title, "--id", request_id, f"--deadline={deadline}", "--url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"submitted {request_id}\n"


async def waiting(url: str) -> set[str]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(url, headers=JSON)
    assert answer.status_code == 200
    return {entry["id"] for entry in answer.json()["waiting"]}


async def wait_until_waiting(url: str, *request_ids: str) -> None:
    """Poll the listing until the requests wait (the entry commits with the wait itself)."""
    with trio.fail_after(HANG):
        # The condition is in the server process: no event of ours can tell; poll it.
        while not set(request_ids) <= await waiting(url):  # noqa: ASYNC110
            await trio.sleep(0.05)


async def post_form(url: str, path: str, **fields: str) -> httpx.Response:
    """Post a form as a browser does (form-encoded, HTML wanted, a same-origin Origin)."""
    async with httpx.AsyncClient() as client:
        return await client.post(url + path, data=fields, headers={"Origin": url})


async def test_decided_through_the_web_form(tmp_path: Path) -> None:
    store = tmp_path / "store"
    # One worker, three requests waiting at once: a waiting run holds no worker.
    async with serving(store, "--workers", "1") as (server, url):
        await submit(url, "exp-1", "New <laptop> & dock")
        await submit(url, "exp-2", "Conference ticket")
        await submit(url, "exp-3", "Team lunch")
        await wait_until_waiting(url, "exp-1", "exp-2", "exp-3")

        async with httpx.AsyncClient() as client:
            page = (await client.get(url)).text
        assert "New &lt;laptop&gt; &amp; dock" in page and "<laptop>" not in page  # escaped
        assert page.count('value="approve">Approve</button>') == 3

        approved = await post_form(
            url, "/decide", request="exp-1", decision="approve", approver="alice", comment="ok"
        )
        assert approved.status_code == 200, approved.text
        assert "outcome: delivered" in approved.text
        rejected = await post_form(
            url, "/decide", request="exp-2", decision="reject", approver="bob", comment="<no>"
        )
        assert rejected.status_code == 200, rejected.text
        with trio.fail_after(HANG):
            await server.expect("=> exp-1 succeeded: approved by alice: ok")
            await server.expect("=> exp-2 failed: rejected by bob: <no>")
        assert await waiting(url) == {"exp-3"}
        async with httpx.AsyncClient() as client:
            page = (await client.get(url)).text
        assert "exp-2 (Conference ticket): rejected by bob: &lt;no&gt;" in page
        await stop(server)


async def test_a_waiting_request_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with serving(store) as (server, url):
        await submit(url, "deploy-7", "Deploy 2.0 to production")
        await wait_until_waiting(url, "deploy-7")
        await stop(server)  # SIGINT while the request waits: prompt, clean, exit status 0
    assert "=>" not in "\n".join(server.lines)

    async with serving(store) as (server, url):
        listed = await cli("list", "--url", url)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.decode().startswith("deploy-7: Deploy 2.0 to production")
        decided = await cli(
            "decide", "deploy-7", "approve", "--approver", "carol", "--comment", "go", "--url", url
        )
        assert decided.returncode == 0, decided.stderr
        assert decided.stdout.decode() == "deploy-7: delivered: the request continues now\n"
        with trio.fail_after(HANG):
            await server.expect("=> deploy-7 succeeded: approved by carol: go")
        await stop(server)
    # The restarted process went on from the wait: step 0 did not run again.
    assert not any(line.startswith("request deploy-7 waits") for line in server.lines)


async def test_the_deadline_passes_without_a_decision(tmp_path: Path) -> None:
    async with serving(tmp_path / "store") as (server, url):
        await submit(url, "exp-9", "Printer paper", deadline=0.5)
        with trio.fail_after(HANG):
            await server.expect("=> exp-9 failed: expired: no decision within 0.5 s")
        late = await cli("decide", "exp-9", "approve", "--url", url)
        assert late.returncode == 1
        assert late.stderr.decode().endswith("error: request exp-9 has ended already\n")
        assert await waiting(url) == set()
        await stop(server)


async def test_bad_input_is_refused_and_loses_nothing(tmp_path: Path) -> None:
    async with serving(tmp_path / "store") as (server, url):
        await submit(url, "exp-4", "Standing desk")
        await wait_until_waiting(url, "exp-4")

        unknown = await post_form(url, "/decide", request="exp-404", decision="approve")
        assert unknown.status_code == 404
        assert "no request &#x27;exp-404&#x27;" in unknown.text
        malformed = await post_form(url, "/decide", request="../exp-4", decision="approve")
        assert malformed.status_code == 404
        word = await post_form(url, "/decide", request="exp-4", decision="maybe")
        assert word.status_code == 400
        assert "the decision is approve or reject" in word.text
        async with httpx.AsyncClient() as client:
            foreign = await client.post(  # another site's page posting the form
                url + "/decide",
                data={"request": "exp-4", "decision": "reject"},
                headers={"Origin": "http://evil.example"},
            )
        assert foreign.status_code == 403
        by_cli = await cli("decide", "exp-404", "reject", "--url", url)
        assert by_cli.returncode == 1
        assert by_cli.stderr.decode().endswith("error: no request 'exp-404'\n")
        bad_word = await cli("decide", "exp-4", "maybe", "--url", url)
        assert bad_word.returncode == 2
        assert "invalid choice: 'maybe'" in bad_word.stderr.decode()

        # Nothing refused was applied: the request still waits, and takes a good decision.
        assert await waiting(url) == {"exp-4"}
        good = await post_form(url, "/decide", request="exp-4", decision="approve")
        assert good.status_code == 200, good.text
        with trio.fail_after(HANG):
            await server.expect("=> exp-4 succeeded: approved by anonymous: (no comment)")
        await stop(server)

    unreachable = await cli("list", "--url", url)  # the server is gone
    assert unreachable.returncode == 1
    assert "is `serve` running?" in unreachable.stderr.decode()
    helped = await cli("decide", "--help")
    assert helped.returncode == 0 and b"{approve,reject}" in helped.stdout
