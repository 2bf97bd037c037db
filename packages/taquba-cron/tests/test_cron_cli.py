"""``taquba cron list | pause | resume``: the plugin, loaded through the entry-point group
``taquba.cli`` of the installed distribution, on a real store and through a real server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import taquba
from taquba_cron import Schedule, Scheduler

pytest.importorskip("taquba.cli")  # a taquba without the plugin group runs no plugin

from taquba._cli import main  # pyright: ignore[reportPrivateUsage]
from taquba.testing import open_child

SCHEDULES = [
    Schedule("daily", "@daily", "reports", payload=b"r"),
    Schedule("hourly", "@hourly", "pings", payload=b"p"),
]


async def prepare(root: Path) -> None:
    """Both schedules get their stored state (a first `fire_due`)."""
    async with taquba.open_queue(str(root), flush_interval=0.005) as queue:
        await Scheduler(queue, SCHEDULES).fire_due()


async def paused(root: Path) -> dict[str, bool]:
    async with taquba.open_queue(str(root), flush_interval=0.005) as queue:
        scheduler = Scheduler(queue, SCHEDULES)
        return {s.name: (await scheduler.status(s.name)).paused for s in SCHEDULES}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    trio.run(prepare, root)
    return root


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_pause_and_resume_on_the_store(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "cron", "list", "--store", str(root), "--json")
    assert (code, err) == (0, "")
    listed = json.loads(out)["schedules"]
    assert [(s["name"], s["paused"], s["error"]) for s in listed] == [
        ("daily", False, None),
        ("hourly", False, None),
    ]
    code, out, err = run_main(capsys, "cron", "pause", "daily", "--store", str(root))
    assert (code, out, err) == (0, "schedule 'daily' paused\n", "")
    assert trio.run(paused, root) == {"daily": True, "hourly": False}
    code, out, _ = run_main(capsys, "cron", "pause", "daily", "--store", str(root))
    assert out == "schedule 'daily' was already paused\n"
    code, out, _ = run_main(capsys, "cron", "list", "--store", str(root))
    assert code == 0
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["daily", "paused"],
        ["hourly", "active"],
    ]
    code, out, err = run_main(capsys, "cron", "resume", "daily", "--store", str(root), "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"name": "daily", "paused": False, "changed": True}
    assert trio.run(paused, root) == {"daily": False, "hourly": False}


def test_an_unknown_schedule_and_a_corrupt_state(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(capsys, "cron", "pause", "weekly", "--store", str(root))
    assert code == 2
    assert "no stored state for a schedule 'weekly'" in err
    assert "daily, hourly" in err

    async def corrupt() -> None:
        async with taquba.open_queue(str(root)) as queue:
            await queue.kv_put(b"cron/state/broken", b"not json")

    trio.run(corrupt)
    code, out, _ = run_main(capsys, "cron", "list", "--store", str(root), "--json")
    broken = json.loads(out)["schedules"][0]
    assert broken["name"] == "broken"
    assert "not JSON" in broken["error"]
    code, _, err = run_main(capsys, "cron", "pause", "broken", "--store", str(root))
    assert code == 1
    assert "CorruptState" in err


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "taquba", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_the_installed_entry_point_adds_the_command(root: Path) -> None:
    result = await run_cli("cron", "list", "--store", str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[0].split() == [
        "name",
        "state",
        "last",
        "fire",
        "(UTC)",
    ]
    assert result.stderr == b""


@pytest.mark.slow
async def test_pause_and_resume_through_a_real_server(root: Path) -> None:
    pytest.importorskip("taquba_server._cli")
    args = ("-m", "taquba", "serve", "--store", str(root), "--port", "0")
    async with open_child(*args) as child:
        with trio.fail_after(240):  # a hang bound: a dozen CLI processes on a loaded machine
            line = await child.expect(lambda text: text.startswith("taquba-server listening on"))
            url = line.split()[-1]

            async def remote(*command: str) -> Any:
                result = await run_cli("cron", *command, "--server", url, "--json")
                assert result.returncode == 0, result.stderr
                return json.loads(result.stdout)

            refused = await run_cli("cron", "pause", "daily", "--store", str(root))
            assert refused.returncode == 1
            assert f"--server {url}" in refused.stderr.decode()
            assert await remote("pause", "hourly") == {
                "name": "hourly",
                "paused": True,
                "changed": True,
            }
            listed = await remote("list")
            assert [s["paused"] for s in listed["schedules"]] == [False, True]
            child.process.send_signal(signal.SIGTERM)
            await child.expect_exit(0)
    assert await paused(root) == {"daily": False, "hourly": True}
