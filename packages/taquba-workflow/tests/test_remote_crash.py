"""Remote crash-resume: `test_crash.py`'s run with the workflow in processes other than the owner.

A ``taquba-server`` process owns a local-disk store. ``wf_remote_crash_child.py`` (the same
workflow and `Runtime` as ``wf_crash_child.py``, over `taquba_client.remote.open_remote_queue`)
serves the 5-step run and is SIGKILLed in every step, in its hook and after; the next child
picks up what the dead one held once the server's reaper takes back its expired lease. The run
must finish exactly once, each step's memoized work done once, as in-process; the test then
stops the server and checks the store itself.

The server is also SIGKILLed and restarted (same store, same port) under a remote `Runtime`
holding a step: the runtime reconnects and takes the step again, and the run still finishes
exactly once.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import taquba
from taquba import QueueConfig
from taquba.testing import Child, open_child
from taquba_workflow import RunState, Runtime, TerminalStatus, read_run_outcome
from wf_support import live_jobs

# A compatibility-matrix row installs taquba-workflow with its own dependencies only.
REASON = "the remote crash tests need taquba-server and taquba-client"
pytest.importorskip("taquba_server", reason=REASON)
pytest.importorskip("taquba_client", reason=REASON)

CHILD = Path(__file__).with_name("wf_remote_crash_child.py")
STEPS = 5
LEASE = 1.0
"""The server's lease: what a killed child held comes back after it."""
PREFIX = "taquba-server listening on "

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
    pytest.mark.slow,
]


@asynccontextmanager
async def open_server(store: Path, port: int = 0) -> AsyncIterator[tuple[Child, str]]:
    """A ``taquba-server`` process owning database ``crash`` of ``store``, short leases."""
    argv = ["-m", "taquba_server", "--store", store.as_uri(), "--name", "crash"]
    argv += ["--port", str(port)]
    options = ["--lease-duration", str(LEASE), "--reaper-interval", "0.1"]
    async with open_child(*argv, *options) as server:
        with trio.fail_after(90):
            line = await server.expect(lambda line: line.startswith(PREFIX))
        yield server, line.removeprefix(PREFIX)


async def run_child(url: str, state: Path) -> tuple[str, str]:
    """Run the child until it stops somewhere (kill it there) or ends; return what it said."""
    with trio.fail_after(90):
        async with open_child(CHILD, url, state) as child:
            line = await child.expect(lambda line: line.startswith(("AT ", "DONE ")))
            tag, point = line.split()
            if tag == "AT":
                (state / f"killed-{point}").touch()  # the next process goes past
                await child.kill()
                return "killed", point
            await child.expect_exit(0)
            return "done", point


def lines(state: Path, name: str) -> int:
    path = state / name
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_a_remote_run_killed_in_every_step_finishes_exactly_once(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    state = tmp_path / "state"
    state.mkdir()
    events = []
    async with open_server(store_dir) as (server, url):
        for _ in range(STEPS + 4):
            event = await run_child(url, state)
            events.append(event)
            if event[0] == "done":
                break
        server.process.send_signal(signal.SIGINT)
        with trio.fail_after(45):
            await server.expect_exit(0)
    assert events == [
        *(("killed", f"step-{k}") for k in range(STEPS)),
        ("killed", "hook"),  # the end committed, its notification job was being delivered
        ("killed", "finished"),  # after the notification was delivered again
        ("done", "succeeded"),
    ]
    # Each step's memoized work was done exactly once, though steps ran more than once.
    assert [lines(state, f"work-{k}") for k in range(STEPS)] == [1] * STEPS
    assert [lines(state, f"exec-{k}") for k in range(STEPS)] == [2] * STEPS  # no hook rerun
    # The notification survived the crash as a job: delivered again after the restart, and
    # the hook only ever saw the committed end.
    assert lines(state, "hook") == 2
    assert lines(state, "hook-saw-succeeded") == 2

    await check_store(store_dir)


async def check_store(store_dir: Path) -> None:
    """The store, reopened by the test once the server stopped: one committed end, every step
    acknowledged once."""
    async with taquba.open_queue(store_dir, "crash", config=QueueConfig()) as queue:
        jobs = await live_jobs(queue)
        assert jobs["done"] == STEPS
        hooks = await live_jobs(queue, "workflow-hooks")
        assert hooks["done"] == 1 and hooks["pending"] == hooks["dead"] == 0
        assert jobs["pending"] == jobs["scheduled"] == jobs["claimed"] == jobs["dead"] == 0

        async def unused(step):  # pragma: no cover - never called
            raise AssertionError

        runtime = Runtime(queue, unused)
        status = await runtime.status("crash-run")
        assert status is not None
        assert (status.state, status.step) == (RunState.SUCCEEDED, STEPS - 1)
    outcome = await read_run_outcome(taquba.Store.from_url(store_dir), "crash-run")
    assert outcome is not None and outcome.status is TerminalStatus.SUCCEEDED
    assert outcome.result == b"w0;w1;w2;w3;w4;"


async def test_the_server_killed_and_restarted_under_a_remote_runtime(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    state = tmp_path / "state"
    state.mkdir()
    for point in ["step-0", "step-1", "step-3", "step-4", "hook"]:
        (state / f"killed-{point}").touch()  # only step 2 stops (and the end, as before)
    async with open_server(store_dir) as (server, url):
        port = int(url.rsplit(":", 1)[1])
        with trio.fail_after(90):
            async with open_child(CHILD, url, state, "patient") as child:
                await child.expect("AT step-2")  # holding step 2's claim
                await server.kill()
                async with open_server(store_dir, port) as (restarted, again):
                    assert again == url
                    # The restart handed step 2 out again: the same runtime, reconnected,
                    # takes it (the first execution still hangs, its claim is gone).
                    await child.expect("AT step-2")
                    (state / "killed-step-2").touch()
                    await child.kill()
                    assert await run_child(url, state) == ("killed", "finished")
                    assert await run_child(url, state) == ("done", "succeeded")
                    restarted.process.send_signal(signal.SIGINT)
                    await restarted.expect_exit(0)
    assert [lines(state, f"work-{k}") for k in range(STEPS)] == [1] * STEPS
    assert [lines(state, f"exec-{k}") for k in range(STEPS)] == [1, 1, 3, 1, 1]
    assert lines(state, "hook") == lines(state, "hook-saw-succeeded") == 1
    await check_store(store_dir)
