"""A workflow process for the crash tests, run as ``python wf_crash_child.py STORE_DIR STATE_DIR``.

It is started with ``sys.executable`` (never forked from the test process) and serves one
5-step run, ``crash-run``, on a local-disk store. It talks to the test through stdout (one
flushed line per event) and counts what it does in files of ``STATE_DIR`` (one ``O_APPEND``
write per event, so a SIGKILL never leaves a torn count):

- ``work-<k>``: the memoized work of step ``k`` was done (must end with exactly one line);
- ``exec-<k>``: step ``k`` was executed;
- ``hook``: the terminal hook was called;
- ``hook-saw-<state>``: what `Runtime.status` said while the hook ran.

The first time it reaches a point it stops there and prints where it is (``AT step-<k>``,
``AT hook``, ``AT finished``), waiting to be killed; the test creates ``killed-<point>`` before
it kills, so the next process passes that point. ``READY`` is printed once the queue is open;
``DONE <state>`` when the run has ended and nothing stops it, after which it exits.

`serve` is the workflow itself, on any `taquba.QueueLike`: ``wf_remote_crash_child.py`` runs
it over a remote queue.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

import taquba
from taquba_workflow import (
    Continue,
    RunOutcome,
    RunSpec,
    Runtime,
    Step,
    StepOutcome,
    Succeed,
)

RUN = "crash-run"
STEPS = 5
SAFETY_EXIT = 60.0
FAST = {"flush_interval": 0.01, "reaper_interval": 3600.0, "scheduler_interval": 3600.0}


def say(*words: object) -> None:
    print(*words, flush=True)


def count(state: Path, name: str) -> None:
    fd = os.open(state / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x\n")
    finally:
        os.close(fd)


async def stop_here(state: Path, point: str) -> None:
    """The first time: announce the point and wait for the SIGKILL."""
    if not (state / f"killed-{point}").exists():
        say("AT", point)
        await trio.sleep_forever()


async def serve(
    queue: taquba.QueueLike, state: Path, claimed_hooks: Callable[[], Awaitable[list[str]]]
) -> None:
    """Serve ``crash-run`` on ``queue`` (``claimed_hooks``: the ids of claimed hook jobs)."""

    async def run_step(step: Step) -> StepOutcome:
        count(state, f"exec-{step.number}")
        work = await step.memo.get("work")
        if work is None:  # the expensive, irreversible part: done once per step
            count(state, f"work-{step.number}")
            work = f"w{step.number};".encode()
            await step.memo.put("work", work)
        await stop_here(state, f"step-{step.number}")
        if step.number < STEPS - 1:
            return Continue(step.payload + work)
        return Succeed(step.payload + work)

    hook_done = trio.Event()
    runtime: Runtime | None = None

    async def on_end(outcome: RunOutcome) -> None:
        count(state, "hook")
        assert runtime is not None
        status = await runtime.status(outcome.run_id)
        count(state, f"hook-saw-{status.state.value if status else None}")
        await stop_here(state, "hook")  # the end committed; its notification is in flight
        hook_done.set()

    runtime = Runtime(queue, run_step, on_end, poll_interval=0.05)
    say("READY")
    with trio.move_on_after(SAFETY_EXIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            if await runtime.status(RUN) is None:
                await runtime.submit(RunSpec(input=b"", run_id=RUN, max_attempts_per_step=10))
            final = await runtime.wait_finished(RUN)
            assert final is not None
            if not (state / "killed-finished").exists():
                await hook_done.wait()  # the notification was delivered (after a crash)
                for job_id in await claimed_hooks():  # and its acknowledgement committed
                    with contextlib.suppress(taquba.JobNotFound):
                        await queue.wait_for_completion(job_id)
            await stop_here(state, "finished")  # committed; the process dies after it
            say("DONE", final.state.value)
            nursery.cancel_scope.cancel()


async def main(store_dir: str, state_dir: str) -> None:
    async with taquba.open_queue(store_dir, "crash", **FAST) as queue:

        async def claimed_hooks() -> list[str]:
            page = await queue.list_jobs("workflow-hooks", taquba.JobStatus.CLAIMED)
            return [job.id for job in page.jobs]

        await serve(queue, Path(state_dir), claimed_hooks)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
