"""Crash-resume with real processes: SIGKILL a 5-step run in every step, in its hook, and after.

The child (``wf_crash_child.py``) is a fresh interpreter (`taquba.testing.open_child`), never a
fork. It stops the first time it reaches each point and the test kills it there with SIGKILL,
then starts it again on the same local-disk store. The run must finish exactly once, each
step's memoized work done once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

import taquba
from taquba import QueueConfig
from taquba.testing import open_child
from taquba_workflow import RunState, Runtime, TerminalStatus, read_run_outcome
from wf_support import live_jobs

CHILD = Path(__file__).with_name("wf_crash_child.py")
STEPS = 5

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


async def run_child(store_dir: Path, state: Path) -> tuple[str, str]:
    """Run the child until it stops somewhere (kill it there) or ends; return what it said."""
    with trio.fail_after(30):
        async with open_child(CHILD, store_dir, state) as child:
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


async def test_a_run_killed_in_every_step_finishes_exactly_once(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    state = tmp_path / "state"
    state.mkdir()
    events = []
    for _ in range(STEPS + 4):
        event = await run_child(store_dir, state)
        events.append(event)
        if event[0] == "done":
            break
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

    # The store, reopened by the test: one committed end, every step acknowledged once.
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
