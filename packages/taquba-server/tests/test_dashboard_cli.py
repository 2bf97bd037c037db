"""The dashboard of the ``taquba-server`` command: a cron scheduler from --setup, the audit log."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pytest
import trio

from taquba.testing import Child, open_child

PREFIX = "taquba-server listening on "
SETUP = """\
import taquba_cron

async def setup(queue, nursery):
    scheduler = taquba_cron.Scheduler(
        queue, [taquba_cron.Schedule("hourly", "0 * * * *", "reports", tz="Asia/Tokyo")]
    )
    await nursery.start(scheduler.serve)
    return scheduler
"""


async def listening(child: Child) -> str:
    with trio.fail_after(30):
        line = await child.expect(lambda line: line.startswith(PREFIX))
    return line.removeprefix(PREFIX)


@pytest.mark.slow
async def test_setup_returns_a_scheduler_and_actions_are_audited(tmp_path: Path) -> None:
    pytest.importorskip("taquba_cron")
    (tmp_path / "cron_setup.py").write_text(SETUP)
    argv = ["-m", "taquba_server", "--store", "memory://", "--port", "0"]
    env = {"PYTHONPATH": str(tmp_path), "TAQUBA_SERVER_TOKENS": "sekrit:admin"}
    async with open_child(*argv, "--setup", "cron_setup:setup", env=env) as child:
        url = await listening(child)
        async with httpx.AsyncClient(base_url=url) as http:
            login = await http.post("/ui/login", data={"token": "sekrit", "next": "/ui/cron"})
            assert login.status_code == 303
            page = await http.get("/ui/cron")
            assert page.status_code == 200
            assert "hourly" in page.text and "JST" in page.text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            paused = await http.post(
                "/ui/actions/pause",
                data={"schedule": "hourly", "csrf": csrf.group(1), "confirm": "yes"},
            )
            assert paused.status_code == 303
            assert "paused" in (await http.get("/ui/cron")).text
        child.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await child.expect_exit(0)
    stderr = child.stderr()
    assert "taquba_server.audit: ui login: env#1 from 127.0.0.1" in stderr
    assert "taquba_server.audit: ui pause: env#1 paused cron schedule hourly" in stderr


async def test_a_setup_returning_something_else_exits_2(tmp_path: Path) -> None:
    (tmp_path / "odd_setup.py").write_text("async def setup(queue, nursery):\n    return 42\n")
    argv = ["-m", "taquba_server", "--store", "memory://", "--port", "0"]
    async with open_child(
        *argv, "--setup", "odd_setup:setup", env={"PYTHONPATH": str(tmp_path)}
    ) as child:
        with trio.fail_after(30):
            await child.expect_exit(2)
    assert "--setup returned int" in child.stderr()


async def test_no_dashboard(tmp_path: Path) -> None:
    argv = ["-m", "taquba_server", "--store", "memory://", "--port", "0", "--no-dashboard"]
    async with open_child(*argv) as child:
        url = await listening(child)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/ui/")).status_code == 404
        child.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await child.expect_exit(0)
